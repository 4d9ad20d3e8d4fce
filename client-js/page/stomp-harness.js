/* In-page half of the browser suite's STOMP section (lib/stomp-test.js).
 *
 * Loaded by stomp.html after sockjs-client 1.6.1, stompjs 2.3.3 (global
 * Stomp, "classic") and @stomp/stompjs 7 (global StompJs, "modern"). Each
 * test resolves (never rejects) to { ok, reason, transport, openMs, echoMs,
 * detail } and bounds every wait.
 */
(function () {
  'use strict';

  function now() { return performance.now(); }

  function within(ms, what, promise) {
    var timer;
    var late = new Promise(function (_, reject) {
      timer = setTimeout(function () { reject(new Error(what + ': nothing within ' + ms + ' ms')); }, ms);
    });
    return Promise.race([promise, late]).finally(function () { clearTimeout(timer); });
  }

  function waitFor(what, ms, check) {
    return within(ms, what, new Promise(function (resolve) {
      (function poll() { if (check()) resolve(); else setTimeout(poll, 20); })();
    }));
  }

  function quietFor(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function deferred() {
    var d = {};
    d.promise = new Promise(function (resolve) { d.resolve = resolve; });
    return d;
  }

  // One STOMP client of either library over a new SockJS session, behind
  // one interface. Heart-beats are counted from each library's own debug
  // lines (">>> PING" sent, "<<< PONG" received).
  function openClient(a) {
    var c = {
      sock: null, transport: null, stats: { ping: 0, pong: 0 },
      connected: deferred(), error: deferred(), closed: deferred(), receipts: {},
    };
    function sockjs() {
      var sock = new SockJS(a.url, null, { transports: [a.transport], timeout: 5000 });
      c.sock = sock;
      sock.addEventListener('open', function () { c.transport = sock.transport; });
      sock.addEventListener('close', function (e) { c.closed.resolve({ code: e.code, reason: e.reason }); });
      return sock;
    }
    function debug(line) {
      if (line.indexOf('>>> PING') === 0) c.stats.ping++;
      else if (line.indexOf('<<< PONG') === 0) c.stats.pong++;
    }
    function onReceipt(frame) {
      var waiter = c.receipts[frame.headers['receipt-id']];
      if (waiter) waiter.resolve(frame);
    }
    function receipt(id) {
      c.receipts[id] = c.receipts[id] || deferred();
      return c.receipts[id].promise;
    }
    var headers = { login: a.login, passcode: a.passcode, host: '/' };
    if (a.lib === 'classic') {
      var client = Stomp.over(sockjs());
      client.heartbeat.outgoing = a.heartbeatMs;
      client.heartbeat.incoming = a.heartbeatMs;
      client.debug = debug;
      client.onreceipt = onReceipt;
      client.connect(headers, function (frame) { c.connected.resolve(frame); }, function (err) {
        if (err && err.command === 'ERROR') c.error.resolve(err);
      });
      c.subscribe = function (dest, h, onMessage) { return client.subscribe(dest, onMessage, h); };
      c.send = function (dest, body, h) { client.send(dest, h || {}, body); };
      c.receipt = receipt;
      c.disconnect = function (id) {
        // 2.3.3's disconnect() closes at once, without waiting: send the
        // DISCONNECT with a receipt header ourselves instead.
        client._transmit('DISCONNECT', { receipt: id });
        return receipt(id);
      };
    } else {
      var modern = new StompJs.Client({
        webSocketFactory: sockjs,
        connectHeaders: headers,
        heartbeatIncoming: a.heartbeatMs,
        heartbeatOutgoing: a.heartbeatMs,
        reconnectDelay: 0,
        debug: debug,
        onConnect: function (frame) { c.connected.resolve(frame); },
        onStompError: function (frame) { c.error.resolve(frame); },
      });
      modern.activate();
      c.subscribe = function (dest, h, onMessage) { return modern.subscribe(dest, onMessage, h); };
      c.send = function (dest, body, h) { modern.publish({ destination: dest, body: body, headers: h || {} }); };
      c.receipt = function (id) {
        var r = receipt(id);
        modern.watchForReceipt(id, onReceipt);
        return r;
      };
      c.disconnect = function () {
        // deactivate() sends DISCONNECT with its own receipt id and waits.
        var got = deferred();
        modern.onDisconnect = got.resolve;
        modern.deactivate();
        return got.promise;
      };
      c.modern = modern;
    }
    return c;
  }

  function payloads(tag) {
    var out = [];
    for (var i = 0; i < 100; i++) out.push(tag + ' #' + ('00' + i).slice(-3));
    var big = '';
    var unit = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_';
    while (big.length < 65536) big += unit;
    out.push(big.slice(0, 65536));
    out.push('caf\u00e9 \u65e5\u672c\u8a9e \u0645\u0631\u062d\u0628\u0627 \ud83d\ude00 \ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67 ' +
      '\ud834\udd1e \ud800\udc00 \udbff\udfff \u2028\u2029 "quoted" \\ <b>&amp;</b>');
    return out;
  }

  function firstMismatch(sent, got) {
    for (var i = 0; i < sent.length; i++) {
      if (sent[i] !== got[i]) {
        return 'message ' + i + ': sent ' + JSON.stringify(sent[i].slice(0, 30)) + ' (len ' + sent[i].length + '), got ' +
          (got[i] == null ? 'nothing' : JSON.stringify(got[i].slice(0, 30)) + ' (len ' + got[i].length + ')');
      }
    }
    return null;
  }

  function names() {
    var id = Math.random().toString(36).slice(2, 10);
    return { queue: '/queue/stomp-test-' + id, topic: '/topic/stomp-test-' + id, id: id };
  }

  // Subscribes to a fresh queue (client-individual acks, every message
  // acked) and topic, each subscription confirmed by its receipt.
  function subscribeBoth(c, n, got) {
    c.subscribe(n.queue, { ack: 'client-individual', id: 'q-' + n.id, receipt: 'sub-q-' + n.id }, function (m) {
      got.queue.push(m.body);
      m.ack();
    });
    c.subscribe(n.topic, { id: 't-' + n.id, receipt: 'sub-t-' + n.id }, function (m) { got.topic.push(m.body); });
    return within(10000, 'SUBSCRIBE receipts', Promise.all([c.receipt('sub-q-' + n.id), c.receipt('sub-t-' + n.id)]));
  }

  async function roundTrip(c, n, got, sent, timeoutMs) {
    var from = { queue: got.queue.length, topic: got.topic.length };
    sent.forEach(function (body) { c.send(n.queue, body); c.send(n.topic, body); });
    await waitFor('every message back', timeoutMs, function () {
      return got.queue.length - from.queue >= sent.length && got.topic.length - from.topic >= sent.length;
    });
    var q = firstMismatch(sent, got.queue.slice(from.queue));
    var t = firstMismatch(sent, got.topic.slice(from.topic));
    if (q) throw new Error('queue out of order or changed: ' + q);
    if (t) throw new Error('topic out of order or changed: ' + t);
  }

  // The whole life of one client on one forced transport.
  async function stompSession(a) {
    var t0 = now();
    var r = { ok: false, reason: '', transport: null, openMs: null, echoMs: null, detail: '' };
    var c = openClient(a);
    try {
      var connected = await within(15000, 'CONNECTED', Promise.race([
        c.connected.promise,
        c.error.promise.then(function (f) { throw new Error('ERROR frame: ' + f.headers.message); }),
        c.closed.promise.then(function (e) { throw new Error('closed before CONNECTED: ' + e.code + ' ' + e.reason); }),
      ]));
      r.openMs = Math.round(now() - t0);
      r.transport = c.transport;
      if (c.transport !== a.transport) throw new Error('opened on ' + c.transport + ', expected ' + a.transport);
      var n = names();
      var got = { queue: [], topic: [] };
      await subscribeBoth(c, n, got);
      var sent = payloads(a.lib + '/' + a.transport);
      var t1 = now();
      await roundTrip(c, n, got, sent, 30000);
      r.echoMs = Math.round(now() - t1);

      // Quiet: nothing but heart-beats for a.quietMs.
      var before = { ping: c.stats.ping, pong: c.stats.pong };
      var closedEarly = null;
      c.closed.promise.then(function (e) { closedEarly = e; });
      await quietFor(a.quietMs);
      var pings = c.stats.ping - before.ping;
      var pongs = c.stats.pong - before.pong;
      if (closedEarly) throw new Error('closed during the quiet period: ' + closedEarly.code + ' ' + closedEarly.reason);
      var wanted = Math.max(1, Math.floor(a.quietMs / a.heartbeatMs) - 1);
      if (pings < wanted || pongs < wanted) {
        throw new Error('heart-beats in ' + a.quietMs + ' ms quiet: ' + pings + ' sent, ' + pongs + ' received, expected at least ' + wanted + ' each way');
      }
      await roundTrip(c, n, got, ['after the quiet period'], 10000);
      c.send(n.queue, 'with a receipt', { receipt: 'send-' + n.id });
      await within(10000, 'the RECEIPT of a SEND', c.receipt('send-' + n.id));

      // RabbitMQ 3.10's Web-STOMP answers a DISCONNECT by closing its
      // WebSocket normally (1000 "STOMP died", 4500 through the relay),
      // without the RECEIPT the frame asked for; a broker that sends it
      // gets the client's own close (1000) instead.
      var ending = await within(10000, 'the end after DISCONNECT', Promise.race([
        c.disconnect('bye-' + n.id).then(function (f) { return { receipt: f.headers['receipt-id'] }; }),
        c.closed.promise.then(function (e) { return { close: e }; }),
      ]));
      if (ending.receipt) try { c.sock.close(1000, 'done'); } catch (e) { /* closed already */ }
      var close = await within(10000, 'the close after DISCONNECT', c.closed.promise);
      var clean = ending.receipt ? close.code === 1000 : close.code === 4500;
      if (!clean) throw new Error('closed with ' + close.code + ' "' + close.reason + '" after DISCONNECT');
      r.ok = true;
      r.detail = 'STOMP ' + connected.headers.version + ' to ' + connected.headers.server + ', heart-beat ' + connected.headers['heart-beat'] +
        '; queue and topic ' + sent.length + ' messages each in order (100 numbered, 64 KiB, unicode), ' + got.queue.length +
        ' acked; quiet ' + a.quietMs + ' ms: ' + pings + ' heart-beats sent, ' + pongs + ' received; SEND receipt; DISCONNECT: ' +
        (ending.receipt ? 'RECEIPT ' + ending.receipt + ', ' : 'no RECEIPT, ') + 'close ' + close.code + ' "' + close.reason + '"';
    } catch (e) {
      r.reason = e.message;
      try { c.sock.close(); } catch (e2) { /* ignore */ }
    }
    return r;
  }

  async function stompWrongPasscode(a) {
    var r = { ok: false, reason: '', transport: null, openMs: null, echoMs: null, detail: '' };
    var c = openClient(a);
    try {
      var frame = await within(15000, 'ERROR frame', Promise.race([
        c.error.promise,
        c.connected.promise.then(function () { throw new Error('CONNECTED with a wrong passcode'); }),
      ]));
      r.transport = c.transport;
      if (!/Access refused/.test(frame.body)) throw new Error('ERROR frame without "Access refused": ' + JSON.stringify(frame.body));
      // RabbitMQ 3.10 leaves the connection open after this ERROR; the
      // client closes it.
      r.ok = true;
      r.detail = 'ERROR frame "' + frame.headers.message + '": ' + JSON.stringify(frame.body.trim());
    } catch (e) {
      r.reason = e.message;
    }
    try { c.sock.close(); } catch (e2) { /* ignore */ }
    return r;
  }

  // A client whose session the gateway closes before CONNECTED (the
  // broker is down): resolves with that close.
  async function stompRefused(a) {
    var r = { ok: false, reason: '', transport: null, openMs: null, echoMs: null, detail: '' };
    var c = openClient(a);
    try {
      var close = await within(15000, 'the close', Promise.race([
        c.closed.promise,
        c.connected.promise.then(function () { throw new Error('CONNECTED with the broker down'); }),
      ]));
      r.transport = c.transport;
      r.close = close;
      r.ok = close.code === a.expectCode && close.reason === a.expectReason;
      if (r.ok) r.detail = 'closed ' + close.code + ' "' + close.reason + '" before any STOMP frame';
      else r.reason = 'closed ' + close.code + ' "' + close.reason + '", expected ' + a.expectCode + ' "' + a.expectReason + '"';
    } catch (e) {
      r.reason = e.message;
    }
    try { c.modern && c.modern.deactivate(); } catch (e2) { /* ignore */ }
    return r;
  }

  // Opens one connected, subscribed client per entry of a.runs (lib and
  // transport) and keeps them in window.__held for stompHeldCloses.
  async function stompHold(a) {
    var r = { ok: false, reason: '', transport: null, openMs: null, echoMs: null, detail: '' };
    window.__held = [];
    try {
      await Promise.all(a.runs.map(async function (run) {
        var c = openClient(Object.assign({}, a, run));
        var held = { lib: run.lib, transport: run.transport, client: c, close: null };
        window.__held.push(held);
        c.closed.promise.then(function (e) { held.close = e; });
        await within(15000, run.lib + '/' + run.transport + ' CONNECTED', c.connected.promise);
        var n = names();
        var got = { queue: [], topic: [] };
        await subscribeBoth(c, n, got);
        await roundTrip(c, n, got, ['held ' + run.lib + '/' + run.transport], 10000);
      }));
      r.ok = true;
      r.detail = window.__held.length + ' sessions connected and subscribed: ' +
        window.__held.map(function (h) { return h.lib + '/' + h.client.transport; }).join(', ');
    } catch (e) {
      r.reason = e.message;
    }
    return r;
  }

  async function stompHeldCloses(a) {
    var held = window.__held || [];
    try {
      await waitFor('every held session closed', a.timeoutMs, function () {
        return held.every(function (h) { return h.close; });
      });
    } catch (e) { /* reported below */ }
    return held.map(function (h) {
      return { lib: h.lib, transport: h.transport, close: h.close };
    });
  }

  window.sockjsTests = {
    stompSession: stompSession,
    stompWrongPasscode: stompWrongPasscode,
    stompRefused: stompRefused,
    stompHold: stompHold,
    stompHeldCloses: stompHeldCloses,
  };
})();
