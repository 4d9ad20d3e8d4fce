'use strict';
// STOMP over SockJS through the relay, against a real RabbitMQ (Debian's
// rabbitmq-server with Web-STOMP, started here on loopback ports of its
// own): stompjs 2.3.3 (Stomp.over(new SockJS(url))) and @stomp/stompjs 7
// (webSocketFactory: () => new SockJS(url)) in Chromium, on every forced
// transport, through a gateway started with --relay and
// --relay-subprotocol, and through one started from a copy of
// examples/rabbitmq-stomp.toml. Then the broker is stopped by PID under
// open sessions: each must close with the relay's code; restarted on the
// same ports, a new session must work again.

const fs = require('fs');
const path = require('path');
const procs = require('./procs');

const TRANSPORTS = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource', 'iframe-htmlfile', 'jsonp-polling'];
const LIBS = ['classic', 'modern'];
const LIB_NAMES = { classic: 'stompjs 2.3.3', modern: '@stomp/stompjs 7' };
const QUIET_MS = Number(process.env.STOMP_QUIET_MS || 3000);
const HEARTBEAT_MS = 1000;
// What a client sees when RabbitMQ stops under it. Observed: the broker
// ends each Web-STOMP connection's TCP stream without a close frame as it
// shuts down, which the relay reports as 4501 "Upstream connection lost"
// (README relay table).
const BROKER_STOPPED = 4501;
const CLOSE_BOUND_MS = 20000;

// The files the test page server serves for this section.
function pageFiles(pageDir, modulesDir) {
  return {
    '/stomp.html': path.join(pageDir, 'stomp.html'),
    '/stomp-harness.js': path.join(pageDir, 'stomp-harness.js'),
    '/stompjs-2.3.3.js': path.join(modulesDir, 'stompjs/lib/stomp.js'),
    '/stompjs-7.js': path.join(modulesDir, '@stomp/stompjs/bundles/stomp.umd.js'),
  };
}

async function runStomp(t) {
  const { runInPage, report, section, pageOrigin, logDir, gatewayBin, rabbitDir, root, transportFilter, context } = t;
  const started = Date.now();
  const rabbit = await procs.startRabbitmq(rabbitDir);
  const rabbitReadyMs = Date.now() - started;
  const flagged = await procs.startGateway(gatewayBin, [
    '--relay', `/stomp=${rabbit.url}`, '--relay-subprotocol', '/stomp=v12.stomp',
  ], path.join(logDir, 'stomp-gateway.log'));
  const example = fs.readFileSync(path.join(root, 'examples/rabbitmq-stomp.toml'), 'utf8');
  if (!example.includes('ws://127.0.0.1:15674/ws')) throw new Error('examples/rabbitmq-stomp.toml no longer names ws://127.0.0.1:15674/ws');
  const configFile = path.join(logDir, 'rabbitmq-stomp.toml');
  fs.writeFileSync(configFile, example.replace('ws://127.0.0.1:15674/ws', rabbit.url));
  const fromFile = await procs.startGateway(gatewayBin, ['--config', configFile], path.join(logDir, 'stomp-file-gateway.log'));
  section(`STOMP: RabbitMQ (beam pid ${rabbit.child.pid}, epmd pid ${rabbit.epmd.pid}) Web-STOMP ${rabbit.url}, ready in ` +
    `${(rabbitReadyMs / 1000).toFixed(1)} s; gateway ${flagged.port} (--relay-subprotocol), gateway ${fromFile.port} ` +
    `(examples/rabbitmq-stomp.toml); page ${pageOrigin}/stomp.html; quiet ${QUIET_MS} ms, heart-beat ${HEARTBEAT_MS} ms`);
  const harness = `${pageOrigin}/stomp.html`;
  const base = { login: rabbit.user, passcode: rabbit.pass, heartbeatMs: HEARTBEAT_MS, quietMs: QUIET_MS };
  const url = (gw) => `http://127.0.0.1:${gw.port}/stomp`;
  const wanted = (tr) => !transportFilter || transportFilter.has(tr);

  for (const lib of LIBS) {
    for (const transport of TRANSPORTS.filter(wanted)) {
      const r = await runInPage(harness, 'stompSession', { ...base, lib, transport, url: url(flagged) });
      report(`stomp/${LIB_NAMES[lib]}`, 'session', r);
    }
    const wrong = await runInPage(harness, 'stompWrongPasscode', { ...base, passcode: 'wrong', lib, transport: 'websocket', url: url(flagged) });
    report(`stomp/${LIB_NAMES[lib]}`, 'wrong passcode', wrong);
  }
  for (const [lib, transport] of [['modern', 'websocket'], ['classic', 'xhr-streaming']]) {
    const r = await runInPage(harness, 'stompSession', { ...base, lib, transport, url: url(fromFile) });
    report(`stomp/${LIB_NAMES[lib]}, example file`, 'session', r);
  }

  // The broker goes away under open sessions.
  const held = TRANSPORTS.map((transport, i) => ({ lib: LIBS[i % 2], transport }));
  const page = await context.newPage();
  try {
    await page.goto(harness, { waitUntil: 'load', timeout: 15000 });
    await page.waitForFunction(() => !!window.sockjsTests, null, { timeout: 10000 });
    const hold = await page.evaluate((a) => window.sockjsTests.stompHold(a), { ...base, runs: held, url: url(flagged) });
    report('stomp/broker stopped', 'sessions held', hold);
    if (hold.ok) {
      const stopping = Date.now();
      await rabbit.stop();
      const stopMs = Date.now() - stopping;
      const closes = await page.evaluate((a) => window.sockjsTests.stompHeldCloses(a), { timeoutMs: CLOSE_BOUND_MS });
      const closedMs = Date.now() - stopping;
      for (const c of closes) {
        const label = `${LIB_NAMES[c.lib]}/${c.transport}`;
        if (!c.close) report('stomp/broker stopped', `closed ${c.transport}`, { ok: false, transport: c.transport, reason: `${label} still open ${CLOSE_BOUND_MS} ms after the broker stopped` });
        else if (c.close.code !== BROKER_STOPPED) report('stomp/broker stopped', `closed ${c.transport}`, { ok: false, transport: c.transport, reason: `${label} closed with ${c.close.code} "${c.close.reason}", expected ${BROKER_STOPPED}` });
        else report('stomp/broker stopped', `closed ${c.transport}`, { ok: true, transport: c.transport, detail: `${label}: ${c.close.code} "${c.close.reason}"` });
      }
      console.log(`      broker stopped by PID in ${stopMs} ms; every held session closed within ${closedMs} ms of the stop`);
      for (const [lib, transport] of [['classic', 'websocket'], ['modern', 'xhr-streaming']]) {
        const r = await runInPage(harness, 'stompRefused', {
          ...base, lib, transport, url: url(flagged), expectCode: 4502, expectReason: 'Upstream unavailable',
        });
        report('stomp/broker down', `${LIB_NAMES[lib]}`, r);
      }
      const restarting = Date.now();
      await procs.startRabbitmq(rabbitDir, rabbit.ports);
      const restartMs = Date.now() - restarting;
      for (const [lib, transport] of [['classic', 'websocket'], ['modern', 'xhr-polling']]) {
        const r = await runInPage(harness, 'stompSession', { ...base, quietMs: 2 * HEARTBEAT_MS + 500, lib, transport, url: url(flagged) });
        if (r.ok) r.detail = `RabbitMQ restarted on the same ports in ${(restartMs / 1000).toFixed(1)} s; ${r.detail}`;
        report('stomp/after the broker restarted', `${LIB_NAMES[lib]}`, r);
      }
    }
  } finally {
    await page.close().catch(() => {});
  }
  return {
    gateways: [
      ['stomp gateway', path.join(logDir, 'stomp-gateway.log'), flagged],
      ['stomp gateway (example file)', path.join(logDir, 'stomp-file-gateway.log'), fromFile],
    ],
  };
}

module.exports = { runStomp, pageFiles };
