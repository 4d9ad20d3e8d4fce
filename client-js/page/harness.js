/* In-page half of the sockjs-gateway browser tests.
 *
 * Loaded by harness.html after sockjs-client 1.6.1. The node runner
 * (browser-tests.js) calls window.sockjsTests.NAME(args) through Playwright;
 * every test resolves (never rejects) to
 *   { ok, reason, transport, openMs, echoMs, detail }
 * and bounds every wait with its own deadline.
 */
(function () {
  'use strict';

  // ---------------------------------------------------------------- helpers

  function now() { return performance.now(); }
  function ms(x) { return Math.round(x); }

  // A short, printable description of a string (for failure reasons).
  function describe(s) {
    if (typeof s !== 'string') return String(s);
    var head = s.slice(0, 40).replace(/[^\x20-\x7e]/g, function (c) {
      return '\\u' + ('000' + c.charCodeAt(0).toString(16)).slice(-4);
    });
    return JSON.stringify(head) + (s.length > 40 ? '...' : '') + ' (len ' + s.length + ')';
  }

  function firstDifference(a, b) {
    var n = Math.min(a.length, b.length);
    for (var i = 0; i < n; i++) {
      if (a.charCodeAt(i) !== b.charCodeAt(i)) {
        return 'at char ' + i + ': sent U+' + a.charCodeAt(i).toString(16) +
          ' got U+' + b.charCodeAt(i).toString(16);
      }
    }
    return 'length sent ' + a.length + ' got ' + b.length;
  }

  function range(from, to) {
    var s = '';
    for (var c = from; c <= to; c++) s += String.fromCharCode(c);
    return s;
  }

  // Every BMP character sockjs-client itself escapes on the way out (its
  // own list of characters browsers mangle), surrogates excluded: those go
  // as pairs below.
  function clientEscapable() {
    var re = /[\x00-\x1f\ufffe\uffff\u0300-\u0333\u033d-\u0346\u034a-\u034c\u0350-\u0352\u0357-\u0358\u035c-\u0362\u0374\u037e\u0387\u0591-\u05af\u05c4\u0610-\u0617\u0653-\u0654\u0657-\u065b\u065d-\u065e\u06df-\u06e2\u06eb-\u06ec\u0730\u0732-\u0733\u0735-\u0736\u073a\u073d\u073f-\u0741\u0743\u0745\u0747\u07eb-\u07f1\u0951\u0958-\u095f\u09dc-\u09dd\u09df\u0a33\u0a36\u0a59-\u0a5b\u0a5e\u0b5c-\u0b5d\u0e38-\u0e39\u0f43\u0f4d\u0f52\u0f57\u0f5c\u0f69\u0f72-\u0f76\u0f78\u0f80-\u0f83\u0f93\u0f9d\u0fa2\u0fa7\u0fac\u0fb9\u1939-\u193a\u1a17\u1b6b\u1cda-\u1cdb\u1dc0-\u1dcf\u1dfc\u1dfe\u1f71\u1f73\u1f75\u1f77\u1f79\u1f7b\u1f7d\u1fbb\u1fbe\u1fc9\u1fcb\u1fd3\u1fdb\u1fe3\u1feb\u1fee-\u1fef\u1ff9\u1ffb\u1ffd\u2000-\u2001\u20d0-\u20d1\u20d4-\u20d7\u20e7-\u20e9\u2126\u212a-\u212b\u2329-\u232a\u2adc\u302b-\u302c\uaab2-\uaab3\uf900-\ufa0d\ufa10\ufa12\ufa15-\ufa1e\ufa20\ufa22\ufa25-\ufa26\ufa2a-\ufa2d\ufa30-\ufa6d\ufa70-\ufad9\ufb1d\ufb1f\ufb2a-\ufb36\ufb38-\ufb3c\ufb3e\ufb40-\ufb41\ufb43-\ufb44\ufb46-\ufb4e\ufff0-\uffff]/;
    var s = '';
    for (var c = 0; c < 0x10000; c++) {
      if (c >= 0xd800 && c <= 0xdfff) continue;
      var ch = String.fromCharCode(c);
      if (re.test(ch)) s += ch;
    }
    return s;
  }

  // What a payload does if a page ever executes it: every channel we can
  // observe from the top page (own global, parent/top globals, postMessage
  // to top, alert in any frame - the runner also watches dialogs).
  var TRAP = 'window.__injected=1;try{parent.__injected=1}catch(e){}' +
    'try{top.__injected=1}catch(e){}try{top.postMessage("__injected","*")}catch(e){}' +
    'alert("injected")';

  function messageBatch() {
    var big = '';
    var unit = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_';  // 64 chars
    while (big.length < 65536) big += unit;
    big = big.slice(0, 65536);
    var batch = [
      'hello, world',
      range(0x20, 0x7e),                       // printable ASCII
      range(0x00, 0xff),                       // U+0000..U+00FF as one string
      '\ud83d\ude00 \ud83d\udc4d\ud83c\udffd \ud83c\uddeb\ud83c\uddf7 \ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67',  // emoji, ZWJ sequence
      '\ud834\udd1e \ud840\udc0b \ud800\udc00 \udbff\udfff',  // U+1D11E, U+2000B, U+10000, U+10FFFF
      range(0x200c, 0x200f),
      range(0x2028, 0x202f),
      range(0x2060, 0x206f),
      range(0xfff0, 0xffff),
      clientEscapable(),
      'caf\u00e9 \u65e5\u672c\u8a9e \u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd e\u0301',
      '',
      'o', 'h', 'a["x"]', 'c[3000,"x"]', 'a[]', 'm"x"', '["a","b"]', '"quoted"', '\\u0000', '\\',
      '</script><script>alert(1)</script>',
      '</script><script>' + TRAP + '</script>',
      '</SCRIPT', '</SCRIPT><SCRIPT>' + TRAP + '</SCRIPT>',
      '<!--', '<!--<script>', '-->', ']]>', '<img src=x onerror="' + TRAP.replace(/"/g, '&quot;') + '">',
      '");' + TRAP + ';("', '\');' + TRAP + ';(\'', '*/' + TRAP + '/*',
      '\u2028' + TRAP + '//', '\u2029' + TRAP + '//',
      'data: o\r\n\r\ndata: a["evil"]\r\n\r\n',     // eventsource framing
      '\r\n\r\n<script>' + TRAP + '</script>',
      big
    ];
    for (var i = 1; i <= 100; i++) batch.push('numbered message #' + i);
    return batch;
  }

  function transportMatches(expect, actual) {
    if (expect == null) return true;
    if (Array.isArray(expect)) return expect.indexOf(actual) !== -1;
    return expect === actual;
  }

  // Opens a SockJS connection; resolves with a connection object once
  // onopen fired, rejects (with a reason) if it closed first or timed out.
  function connect(url, transports, timeoutMs, extraOptions) {
    return new Promise(function (resolve, reject) {
      var options = {};
      if (transports) options.transports = transports;
      if (extraOptions) for (var k in extraOptions) options[k] = extraOptions[k];
      var conn = {
        inbox: [], close: null, opened: false, openMs: null, events: [],
        _waiters: []
      };
      var t0 = now();
      var sock;
      try {
        sock = new SockJS(url, null, options);
      } catch (e) {
        reject(new Error('new SockJS threw: ' + e.message));
        return;
      }
      conn.sock = sock;
      var timer = setTimeout(function () {
        reject(new Error('onopen did not fire within ' + timeoutMs + ' ms'));
        try { sock.close(); } catch (e) { /* ignore */ }
      }, timeoutMs);
      function notify() {
        var ws = conn._waiters.slice();
        ws.forEach(function (w) { w(); });
      }
      sock.onopen = function () {
        clearTimeout(timer);
        conn.opened = true;
        conn.openMs = now() - t0;
        conn.transport = sock.transport;
        conn.events.push('open');
        resolve(conn);
      };
      sock.onmessage = function (e) {
        conn.inbox.push(e.data);
        notify();
      };
      sock.onclose = function (e) {
        conn.events.push('close');
        conn.close = { code: e.code, reason: e.reason, wasClean: e.wasClean };
        conn.closedAt = Date.now();
        if (!conn.opened) {
          clearTimeout(timer);
          reject(new Error('closed before open: code ' + e.code + ' "' + e.reason + '"'));
        }
        notify();
      };
      // Resolves when pred() holds (checked now and on every message or
      // close); rejects after ms with what it was waiting for.
      conn.waitFor = function (pred, timeout, what) {
        return new Promise(function (res, rej) {
          if (pred()) { res(); return; }
          var done = false;
          function check() {
            if (done) return;
            if (pred()) { finish(); res(); }
          }
          function finish() {
            done = true;
            clearTimeout(t);
            var i = conn._waiters.indexOf(check);
            if (i !== -1) conn._waiters.splice(i, 1);
          }
          var t = setTimeout(function () {
            finish();
            rej(new Error('timed out after ' + timeout + ' ms waiting for ' + what +
              (conn.close ? ' (closed: ' + conn.close.code + ' "' + conn.close.reason + '")' : '')));
          }, timeout);
          conn._waiters.push(check);
        });
      };
      conn.shutdown = function () {
        try { if (sock.readyState < 2) sock.close(1000, 'test done'); } catch (e) { /* ignore */ }
      };
    });
  }

  function checkInjection() {
    var problems = [];
    if (window.__injected !== undefined) problems.push('window.__injected was set');
    if (window.__alerts.length) problems.push('alert() called ' + window.__alerts.length + 'x: ' + window.__alerts[0]);
    if (window.__injectedMessages.length) problems.push('injected postMessage received: ' + window.__injectedMessages[0]);
    return problems.length ? 'SCRIPT INJECTION: ' + problems.join('; ') : null;
  }

  function result(conn, extra) {
    var r = {
      ok: true, reason: '', transport: conn ? conn.transport : null,
      openMs: conn && conn.openMs != null ? ms(conn.openMs) : null, echoMs: null, detail: '',
      session: conn && conn.sock ? sessionIdOf(conn.sock) : null,
      sockjsVersion: window.SockJS && window.SockJS.version
    };
    for (var k in extra) r[k] = extra[k];
    var inj = checkInjection();
    if (inj) { r.ok = false; r.reason = inj + (r.reason ? '; ' + r.reason : ''); }
    return r;
  }

  function fail(conn, reason, extra) {
    var r = result(conn, extra || {});
    r.ok = false;
    r.reason = r.reason ? r.reason + '; ' + reason : reason;
    return r;
  }

  function checkTransport(conn, expect) {
    if (!transportMatches(expect, conn.transport)) {
      return 'opened on "' + conn.transport + '", expected ' + JSON.stringify(expect);
    }
    return null;
  }

  // Sends one message and measures its round trip on an echo service.
  function pingEcho(conn, timeout) {
    var text = 'ping-' + Math.random().toString(36).slice(2);
    var start = conn.inbox.length;
    var t0 = now();
    conn.sock.send(text);
    return conn.waitFor(function () { return conn.inbox.length > start; }, timeout, 'echo of the first message')
      .then(function () {
        var got = conn.inbox[start];
        if (got !== text) throw new Error('first echo was ' + describe(got) + ', sent ' + describe(text));
        return now() - t0;
      });
  }

  // ------------------------------------------------------------------ tests

  var tests = {};

  // The message batch round-trips identical and in order.
  tests.echoBatch = async function (a) {
    var conn = null;
    try {
      conn = await connect(a.url, a.transports, a.openTimeout || 10000, a.options);
      var bad = checkTransport(conn, a.expect);
      if (bad) return fail(conn, bad);
      var echoMs = await pingEcho(conn, a.timeout || 10000);
      var batch = messageBatch();
      var start = conn.inbox.length;
      var t0 = now();
      for (var i = 0; i < batch.length; i++) conn.sock.send(batch[i]);
      await conn.waitFor(function () {
        return conn.inbox.length - start >= batch.length;
      }, a.timeout || 20000, 'echo of ' + batch.length + ' messages (got ' +
        '${n})').catch(function (e) {
        throw new Error(e.message.replace('${n}', String(conn.inbox.length - start)));
      });
      var batchMs = now() - t0;
      var got = conn.inbox.slice(start);
      if (got.length !== batch.length) {
        return fail(conn, 'sent ' + batch.length + ' messages, got ' + got.length, { echoMs: ms(echoMs) });
      }
      for (var j = 0; j < batch.length; j++) {
        if (got[j] !== batch[j]) {
          return fail(conn, 'message ' + j + ' differs: sent ' + describe(batch[j]) + ' got ' +
            describe(got[j]) + ' (' + firstDifference(batch[j], got[j]) + ')', { echoMs: ms(echoMs) });
        }
      }
      var transportNow = conn.sock.transport;
      if (transportNow !== conn.transport) {
        return fail(conn, 'transport changed from ' + conn.transport + ' to ' + transportNow, { echoMs: ms(echoMs) });
      }
      if (conn.close) {
        return fail(conn, 'closed during the batch: ' + JSON.stringify(conn.close), { echoMs: ms(echoMs) });
      }
      return result(conn, {
        echoMs: ms(echoMs),
        detail: batch.length + ' msgs (' + batch.reduce(function (n, m) { return n + m.length; }, 0) +
          ' chars) in ' + ms(batchMs) + ' ms'
      });
    } catch (e) {
      return fail(conn, e.message);
    } finally {
      if (conn) conn.shutdown();
    }
  };

  // close(1000, reason) from the client reaches onclose as such.
  tests.clientClose = async function (a) {
    var conn = null;
    try {
      conn = await connect(a.url, a.transports, a.openTimeout || 10000, a.options);
      var bad = checkTransport(conn, a.expect);
      if (bad) return fail(conn, bad);
      var echoMs = await pingEcho(conn, a.timeout || 10000);
      var reason = 'client says bye \u00e9\u00e8';
      conn.sock.close(1000, reason);
      await conn.waitFor(function () { return conn.close; }, 5000, 'onclose after close(1000)');
      var c = conn.close;
      if (c.code !== 1000 || c.reason !== reason || c.wasClean !== true) {
        return fail(conn, 'onclose got ' + JSON.stringify(c) + ', expected code 1000, reason ' +
          JSON.stringify(reason) + ', wasClean true', { echoMs: ms(echoMs) });
      }
      return result(conn, { echoMs: ms(echoMs), detail: 'onclose ' + JSON.stringify(c) });
    } catch (e) {
      return fail(conn, e.message);
    } finally {
      if (conn) conn.shutdown();
    }
  };

  // /close: the server sends c[3000,"Go away!"] right after o.
  tests.serverClose = async function (a) {
    var conn = null;
    try {
      conn = await connect(a.url, a.transports, a.openTimeout || 10000, a.options);
      var bad = checkTransport(conn, a.expect);
      if (bad) return fail(conn, bad);
      await conn.waitFor(function () { return conn.close; }, a.timeout || 10000, 'the server\'s close frame');
      var c = conn.close;
      if (c.code !== 3000 || c.reason !== 'Go away!' || c.wasClean !== true) {
        return fail(conn, 'onclose got ' + JSON.stringify(c) + ', expected {"code":3000,"reason":"Go away!","wasClean":true}');
      }
      if (conn.inbox.length) return fail(conn, 'unexpected messages: ' + describe(conn.inbox[0]));
      return result(conn, { detail: 'onclose ' + JSON.stringify(c) });
    } catch (e) {
      return fail(conn, e.message);
    } finally {
      if (conn) conn.shutdown();
    }
  };

  // /broadcast: two sessions each get both messages.
  tests.broadcast = async function (a) {
    var c1 = null, c2 = null;
    try {
      var both = await Promise.all([
        connect(a.url, a.transports, a.openTimeout || 10000, a.options),
        connect(a.url, a.transports, a.openTimeout || 10000, a.options)
      ]);
      c1 = both[0]; c2 = both[1];
      var bad = checkTransport(c1, a.expect) || checkTransport(c2, a.expect);
      if (bad) return fail(c1, bad);
      var tag = Math.random().toString(36).slice(2);
      var m1 = 'from session 1 ' + tag + ' \ud83d\udce3';
      var m2 = 'from session 2 ' + tag + ' </script>';
      var t0 = now();
      c1.sock.send(m1);
      // Time to echo: until session 1 sees its own message come back.
      await c1.waitFor(function () { return c1.inbox.indexOf(m1) !== -1; }, a.timeout || 10000, 'session 1 to get its own broadcast');
      var echoMs = now() - t0;
      c2.sock.send(m2);
      function hasBoth(c) { return function () { return c.inbox.indexOf(m1) !== -1 && c.inbox.indexOf(m2) !== -1; }; }
      await Promise.all([
        c1.waitFor(hasBoth(c1), a.timeout || 10000, 'session 1 to get both broadcasts'),
        c2.waitFor(hasBoth(c2), a.timeout || 10000, 'session 2 to get both broadcasts')
      ]);
      // Each session sees the two in the order they were sent.
      [c1, c2].forEach(function (c, i) {
        if (c.inbox.indexOf(m1) > c.inbox.indexOf(m2)) throw new Error('session ' + (i + 1) + ' got the broadcasts out of order');
      });
      return result(c1, { echoMs: ms(echoMs), detail: 'both sessions got both messages' });
    } catch (e) {
      return fail(c1, e.message);
    } finally {
      if (c1) c1.shutdown();
      if (c2) c2.shutdown();
    }
  };

  // /amplify: n = 1..18 gives 2^n 'x' (the last is 256 KiB).
  tests.amplify = async function (a) {
    var conn = null;
    try {
      conn = await connect(a.url, a.transports, a.openTimeout || 10000, a.options);
      var bad = checkTransport(conn, a.expect);
      if (bad) return fail(conn, bad);
      var t0 = now();
      conn.sock.send('1');
      await conn.waitFor(function () { return conn.inbox.length >= 1; }, a.timeout || 10000, 'the reply to 1');
      var echoMs = now() - t0;
      for (var n = 2; n <= 18; n++) conn.sock.send(String(n));
      await conn.waitFor(function () { return conn.inbox.length >= 18; }, a.timeout || 20000, '18 replies (got ${n})')
        .catch(function (e) { throw new Error(e.message.replace('${n}', String(conn.inbox.length))); });
      var total = 0;
      for (var i = 0; i < 18; i++) {
        var want = Math.pow(2, i + 1), got = conn.inbox[i];
        if (typeof got !== 'string' || got.length !== want || /[^x]/.test(got)) {
          return fail(conn, 'reply to ' + (i + 1) + ' was ' + describe(got) + ', expected ' + want + ' x', { echoMs: ms(echoMs) });
        }
        total += got.length;
      }
      if (conn.inbox.length !== 18) return fail(conn, 'got ' + conn.inbox.length + ' replies for 18 messages');
      return result(conn, { echoMs: ms(echoMs), detail: '18 replies, ' + total + ' chars, largest 262144 in ' + ms(now() - t0) + ' ms' });
    } catch (e) {
      return fail(conn, e.message);
    } finally {
      if (conn) conn.shutdown();
    }
  };

  // /ticker: at least two tick! messages.
  tests.ticker = async function (a) {
    var conn = null;
    try {
      conn = await connect(a.url, a.transports, a.openTimeout || 10000, a.options);
      var bad = checkTransport(conn, a.expect);
      if (bad) return fail(conn, bad);
      var t0 = now();
      await conn.waitFor(function () { return conn.inbox.length >= 1; }, 5000, 'the first tick!');
      var firstMs = now() - t0;
      await conn.waitFor(function () { return conn.inbox.length >= 2; }, 5000, 'the second tick!');
      var other = conn.inbox.filter(function (m) { return m !== 'tick!'; });
      if (other.length) return fail(conn, 'unexpected message ' + describe(other[0]));
      return result(conn, { echoMs: ms(firstMs), detail: conn.inbox.length + ' ticks in ' + ms(now() - t0) + ' ms' });
    } catch (e) {
      return fail(conn, e.message);
    } finally {
      if (conn) conn.shutdown();
    }
  };

  // ------------------------------------------------------- cluster failover
  // Sessions held across several calls from the runner: holdOpen opens
  // them (each { url, transport, extraEchoes }, verified with 1 +
  // extraEchoes echoes) and names their session ids;
  // heldEcho, after the runner killed a node, has every session that is
  // still open echo a numbered run, and reports how each one ended.

  // The session id sockjs-client chose: the last path segment of the
  // session URL (`.../SERVER/SESSION`, `.../SERVER/SESSION/websocket`).
  function sessionIdOf(sock) {
    var t = sock._transport || {};
    var url = String(t.transUrl || t.url || '');
    var m = /\/[^/]+\/([^/]+?)(?:\/websocket)?$/.exec(url.split('?')[0]);
    return m ? m[1] : null;
  }

  var held = [];

  tests.holdOpen = async function (a) {
    try {
      for (var i = 0; i < a.sessions.length; i++) {
        var t = a.sessions[i].transport;
        var conn = await connect(a.sessions[i].url, [t], a.openTimeout || 10000, { timeout: 5000 });
        var bad = checkTransport(conn, t);
        if (bad) throw new Error(bad);
        for (var e = 0; e <= (a.sessions[i].extraEchoes || 0); e++) await pingEcho(conn, 10000);
        conn.session = sessionIdOf(conn.sock);
        if (!conn.session) throw new Error('no session id found in the ' + t + ' transport object');
        held.push(conn);
      }
      return {
        ok: true,
        sessions: held.map(function (c, i) { return { index: i, transport: c.transport, session: c.session }; })
      };
    } catch (e) {
      return { ok: false, reason: e.message, sessions: [] };
    }
  };

  // Every held session that is open sends `count` numbered messages and
  // must get them back in order; one that closes (before or during) is
  // reported with its close code, reason and how long after `since` (a
  // Date.now() from the runner) it closed.
  tests.heldEcho = async function (a) {
    var outcomes = await Promise.all(held.map(async function (c, i) {
      var sent = [];
      try {
        if (!c.close) {
          var start = c.inbox.length;
          for (var n = 0; n < a.count; n++) {
            sent.push('after #' + n + ' of ' + c.session);
            c.sock.send(sent[n]);
          }
          await c.waitFor(function () { return c.inbox.length - start >= a.count || !!c.close; },
            a.timeout, a.count + ' echoes');
          var got = c.inbox.slice(start);
          for (var j = 0; j < got.length; j++) {
            if (got[j] !== sent[j]) throw new Error('echo ' + j + ' was ' + describe(got[j]) + ', sent ' + describe(sent[j]));
          }
          if (!c.close) return { index: i, echoed: got.length };
        }
      } catch (e) {
        if (!c.close) return { index: i, error: e.message, echoed: c.inbox.length };
      }
      return {
        index: i, echoed: 0, close: c.close,
        closedAfterMs: c.closedAt - a.since
      };
    }));
    return { ok: true, outcomes: outcomes };
  };

  tests.releaseHeld = function () {
    held.forEach(function (c) { c.shutdown(); });
    held = [];
    return true;
  };

  // Proves the injection detectors work: runs the trap payload the way a
  // broken htmlfile response would (a child frame's <script>), reports
  // what was seen, and resets the flags.
  tests.selfCheck = function () {
    return new Promise(function (resolve) {
      var f = document.createElement('iframe');
      f.style.display = 'none';
      f.srcdoc = '<script>' + TRAP + '<\/script>';
      var t = setTimeout(function () { finish('iframe did not load'); }, 5000);
      function finish(err) {
        clearTimeout(t);
        var seen = checkInjection();
        window.__injected = undefined;
        window.__alerts.length = 0;
        window.__injectedMessages.length = 0;
        f.remove();
        resolve({ seen: seen, error: err || null });
      }
      window.addEventListener('message', function onMsg(e) {
        if (e.data === '__injected') { window.removeEventListener('message', onMsg); setTimeout(finish, 0); }
      });
      document.body.appendChild(f);
    });
  };

  // Facts about this browser that decide which transports can exist.
  tests.environment = function () {
    return {
      xdomainRequest: typeof window.XDomainRequest !== 'undefined',
      eventSource: typeof window.EventSource !== 'undefined',
      webSocket: typeof window.WebSocket !== 'undefined',
      postMessage: typeof window.postMessage === 'function',
      sockjsVersion: window.SockJS && window.SockJS.version,
      origin: location.origin
    };
  };

  window.sockjsTests = tests;
})();
