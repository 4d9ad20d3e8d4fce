#!/usr/bin/env node
'use strict';
// Real-browser tests for sockjs-gateway: headless Chromium driven by
// playwright-core runs the real sockjs-client 1.6.1 against the real gateway
// binary, on every transport, behind hostile nginx proxies, and clicks
// through the demo page the gateway serves at `/`.
//
//   node browser-tests.js [--only matrix,releases,proxies,forward-proxy,relay,stomp,cluster,demo] [--transport NAME,...]
//                         [--demo-from-file] [--keep-tmp] [--verbose]
//
// Environment: GATEWAY_BIN (default ../target/debug/sockjs-gateway),
// CHROMIUM (default /usr/bin/chromium), NGINX (default /usr/sbin/nginx),
// STOMP_QUIET_MS (the stomp section's quiet period, default 3000).
// Exit status 0 only if every run passed; a browser or nginx that cannot be
// started is a failure, never a skip.

const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');
const procs = require('./lib/procs');
const { runDemo } = require('./lib/demo-test');
const { runCluster } = require('./lib/cluster-test');
const releases = require('./lib/releases-test');
const { runForwardProxy } = require('./lib/forward-proxy-test');
const stomp = require('./lib/stomp-test');
const { checkAccessLog } = require('./lib/access-log-check');

const ROOT = path.resolve(__dirname, '..');
const HERE = __dirname;
const GATEWAY_BIN = process.env.GATEWAY_BIN || path.join(ROOT, 'target/debug/sockjs-gateway');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const NGINX = process.env.NGINX || '/usr/sbin/nginx';
const SOCKJS_MIN = path.join(HERE, 'node_modules/sockjs-client/dist/sockjs.min.js');
const PAGE_DIR = path.join(HERE, 'page');
// The stomp section (two RabbitMQ starts included) takes about 1.5 min of it.
const TOTAL_BUDGET_MS = 11.5 * 60 * 1000;

// ------------------------------------------------------------------ options
const argv = process.argv.slice(2);
function opt(name) {
  const i = argv.indexOf(name);
  return i === -1 ? null : (argv[i + 1] || '');
}
const ONLY = new Set((opt('--only') || 'matrix,releases,proxies,forward-proxy,relay,stomp,cluster,demo').split(',').filter(Boolean));
const TRANSPORT_FILTER = opt('--transport') ? new Set(opt('--transport').split(',')) : null;
const DEMO_FROM_FILE = argv.includes('--demo-from-file') || process.env.DEMO_FROM_FILE === '1';
const KEEP_TMP = argv.includes('--keep-tmp');
const VERBOSE = argv.includes('--verbose') || process.env.VERBOSE === '1';

// ------------------------------------------------------------------ results
const results = [];
const notApplicable = [];
const t0 = Date.now();

function pad(s, n) { s = String(s); return s.length >= n ? s : s + ' '.repeat(n - s.length); }
function lpad(s, n) { s = String(s); return s.length >= n ? s : ' '.repeat(n - s.length) + s; }
function msText(v) { return v == null ? '     -' : lpad(v, 6); }

// One line per run: status, scenario, check, transport, open, echo, detail/reason.
function report(scenario, check, r) {
  results.push({ scenario, check, ...r });
  const status = r.ok ? 'PASS' : 'FAIL';
  const tail = r.ok ? (r.detail || '') : `reason: ${r.reason}`;
  console.log(`${status}  ${pad(scenario, 37)} ${pad(check, 23)} transport=${pad(r.transport || '-', 18)} ` +
    `open=${msText(r.openMs)}ms echo=${msText(r.echoMs)}ms  ${tail}`);
}

function section(title) {
  console.log(`\n== ${title} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

// ------------------------------------------------------------------ browser
let context = null;

// Starts Chromium with a fresh profile (removed at cleanup) and `extraArgs`;
// resolves with { context, ua }.
async function startChromium(extraArgs = []) {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install -y chromium)`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockjs-chromium-profile-'));
  tmpDirs.push(dir);
  const args = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ...extraArgs,
  ];
  // launchPersistentContext passes --user-data-dir=dir (a fresh
  // temporary directory for this run).
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    args,
    viewport: { width: 1100, height: 760 },
    timeout: 60000,
  });
  // This first page stays open for the whole run: when a profile's last
  // window closes, Chromium ends the browsing session and drops session
  // cookies (the gateway's JSESSIONID is one).
  const page = ctx.pages()[0] || await ctx.newPage();
  await page.setContent('<p>sockjs-gateway browser tests</p>');
  const ua = await page.evaluate(() => navigator.userAgent);
  return { context: ctx, ua };
}

async function launchBrowser() {
  const started = await startChromium();
  context = started.context;
  return started.ua;
}

// Every page but the one that keeps the browsing session (and its
// cookies) alive: their sessions end.
async function closeAllPages() {
  for (const page of context.pages().slice(1)) await page.close().catch(() => {});
}

// Opens the harness in a fresh page, runs one in-page test, and adds what
// the page itself showed (dialogs = alert() in any frame, page errors).
async function runInPage(pageUrl, testName, args, loader, ctx = context) {
  const page = await ctx.newPage();
  const dialogs = [];
  const pageErrors = [];
  page.on('dialog', (d) => { dialogs.push(`${d.type()}: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => pageErrors.push(String(e && e.message || e)));
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  if (VERBOSE) page.on('console', (m) => console.log(`    [console ${m.type()}] ${m.text()}`));
  if (VERBOSE) page.on('response', (resp) => resp.allHeaders().then((h) => console.log(`    [response] ${resp.status()} ${resp.url()} set-cookie=${h['set-cookie']}`)).catch(() => {}));
  const watchdog = procs.deadline(90000, `in-page test ${testName}`);
  try {
    if (loader) await loader(page);
    else await page.goto(pageUrl, { waitUntil: 'load', timeout: 15000 });
    await page.waitForFunction(() => !!window.sockjsTests && !!window.SockJS, null, { timeout: 10000 });
    const r = await Promise.race([
      page.evaluate(({ name, a }) => window.sockjsTests[name](a), { name: testName, a: args }),
      watchdog,
    ]);
    if (dialogs.length) {
      r.ok = false;
      r.reason = `SCRIPT INJECTION: dialog opened: ${dialogs[0]}` + (r.reason ? `; ${r.reason}` : '');
    }
    // The browser's own word on a failure (a CORS refusal is visible only
    // in the console, never to the page's scripts).
    const blocked = consoleErrors.find((t) => /CORS|blocked|ERR_/.test(t));
    if (!r.ok && blocked) r.reason += `; browser console: ${blocked.slice(0, 260)}`;
    if (pageErrors.length) {
      r.pageErrors = pageErrors;
      if (VERBOSE) console.log(`    page errors: ${pageErrors.join(' | ')}`);
    }
    return r;
  } catch (e) {
    return { ok: false, reason: `harness error: ${e.message.split('\n')[0]}`, transport: null };
  } finally {
    watchdog.cancel();
    await page.close().catch(() => {});
  }
}

// Puts the harness in a document of the gateway's own origin: navigates
// to a page the gateway serves itself (the /echo greeting, fetched over
// the network), then writes the harness into that document and adds
// sockjs-client and harness.js to it. SockJS traffic then goes to the
// gateway directly and counts as same-origin. Needed for `htmlfile`, which
// sockjs-client enables only for a same-origin server.
// (Answering the page with page.route() instead would not do: Chromium
// then treats the document as coming from no known address space and
// blocks its WebSocket to 127.0.0.1, net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS.)
function sameOriginLoader(origin, bundle = SOCKJS_MIN) {
  return async (page) => {
    await page.goto(`${origin}/echo`, { waitUntil: 'load', timeout: 15000 });
    const html = fs.readFileSync(path.join(PAGE_DIR, 'harness.html'), 'utf8')
      .replace(/<script src="[^"]*"><\/script>\s*/g, '');
    await page.setContent(html, { waitUntil: 'load', timeout: 15000 });
    await page.addScriptTag({ path: bundle });
    await page.addScriptTag({ path: path.join(PAGE_DIR, 'harness.js') });
    const url = page.url();
    if (!url.startsWith(origin + '/')) throw new Error(`same-origin harness ended up at ${url}`);
  };
}

// ------------------------------------------------------------------ matrix
// Transports of sockjs-client 1.6.1 (lib/transport-list.js) and whether
// Chromium can use them against a server on another origin:
//   websocket, xhr-streaming, xhr-polling, eventsource, jsonp-polling: yes.
//   iframe-eventsource, iframe-htmlfile, iframe-xhr-polling: yes, through
//     the server's iframe page (IframeTransport.enabled = postMessage exists).
//   htmlfile: HtmlFileTransport.enabled(info) = receiver enabled && info.sameOrigin,
//     so only from a page on the gateway's own origin (tested that way).
//   xdr-streaming, xdr-polling: need XDomainRequest (IE 8-9 only); never in Chromium.
const CROSS_ORIGIN_TRANSPORTS = [
  'websocket', 'xhr-streaming', 'xhr-polling', 'eventsource',
  'iframe-eventsource', 'iframe-htmlfile', 'iframe-xhr-polling', 'jsonp-polling',
];
const CHECKS = [
  ['echo-batch', 'echoBatch', '/echo'],
  ['client-close', 'clientClose', '/echo'],
  ['server-close', 'serverClose', '/close'],
  ['broadcast', 'broadcast', '/broadcast'],
  ['amplify', 'amplify', '/amplify'],
  ['ticker', 'ticker', '/ticker'],
];

async function runMatrix(gw, pageOrigin) {
  const gwOrigin = `http://127.0.0.1:${gw.port}`;
  const harness = `${pageOrigin}/harness.html`;

  section(`transport matrix: page ${pageOrigin}, gateway ${gwOrigin}`);

  // Facts that decide which transports exist here.
  const envPage = await context.newPage();
  await envPage.goto(harness, { waitUntil: 'load', timeout: 15000 });
  const env = await envPage.evaluate(() => window.sockjsTests.environment());
  // The injection detectors must see an executed payload (in-page flags,
  // postMessage, and the dialog it opens in a child frame).
  const dialogs = [];
  envPage.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  const self = await envPage.evaluate(() => window.sockjsTests.selfCheck());
  await envPage.close();
  if (!self.seen || !/__injected was set/.test(self.seen) || !/postMessage/.test(self.seen) || !dialogs.length) {
    throw new Error(`harness self-check: the injection detectors missed an executed payload: ${JSON.stringify(self)}, dialogs ${JSON.stringify(dialogs)}`);
  }
  console.log(`harness self-check: an executed payload is detected (${self.seen.replace('SCRIPT INJECTION: ', '')}; dialog "${dialogs[0]}")`);
  if (env.sockjsVersion !== '1.6.1') throw new Error(`harness loaded sockjs-client ${env.sockjsVersion}, expected 1.6.1`);
  console.log(`sockjs-client ${env.sockjsVersion}; XDomainRequest=${env.xdomainRequest} EventSource=${env.eventSource} ` +
    `WebSocket=${env.webSocket} postMessage=${env.postMessage}`);

  for (const name of ['xdr-streaming', 'xdr-polling']) {
    if (env.xdomainRequest) throw new Error('this Chromium has XDomainRequest?');
    const why = 'needs XDomainRequest (IE 8-9 only); window.XDomainRequest is undefined in Chromium';
    notApplicable.push({ name, why });
    console.log(`N/A   ${pad(name, 37)} not counted: ${why}`);
  }

  // Cross-origin, htmlfile must be refused by the client itself (it would
  // close with 2000 "All transports failed" before any request).
  const refused = await runInPage(harness, 'echoBatch', {
    url: `${gwOrigin}/echo`, transports: ['htmlfile'], expect: 'htmlfile', openTimeout: 5000,
  });
  const htmlfileWhy = 'sockjs-client enables htmlfile only for a same-origin server (HtmlFileTransport.enabled needs info.sameOrigin)';
  if (refused.ok || !/2000 "All transports failed"/.test(refused.reason)) {
    report('matrix/htmlfile cross-origin', 'refused', { ok: false, reason: `expected the client to refuse htmlfile cross-origin, got: ${refused.ok ? 'it opened on ' + refused.transport : refused.reason}` });
  } else {
    console.log(`N/A   ${pad('htmlfile (cross-origin)', 37)} not counted: ${htmlfileWhy}; ` +
      `observed: ${refused.reason}. Tested below from a page on the gateway's origin.`);
  }

  const configs = [];
  for (const t of CROSS_ORIGIN_TRANSPORTS) {
    configs.push({ label: `matrix/${t}`, transports: [t], expect: t, pageUrl: harness, base: gwOrigin });
  }
  // eventsource cross-origin needs CORS headers on the event stream; the
  // same transport from the gateway's own origin separates "CORS missing"
  // from "transport broken".
  configs.push({
    label: 'matrix/eventsource (same-origin page)', transports: ['eventsource'], expect: 'eventsource',
    pageUrl: null, base: gwOrigin, loader: sameOriginLoader(gwOrigin),
  });
  configs.push({
    label: 'matrix/htmlfile (same-origin page)', transports: ['htmlfile'], expect: 'htmlfile',
    pageUrl: null, base: gwOrigin, loader: sameOriginLoader(gwOrigin),
  });
  configs.push({ label: 'matrix/default negotiation', transports: null, expect: 'websocket', pageUrl: harness, base: gwOrigin });

  for (const c of configs) {
    if (TRANSPORT_FILTER && !TRANSPORT_FILTER.has(c.expect) && !TRANSPORT_FILTER.has(c.label)) continue;
    for (const [check, fn, prefix] of CHECKS) {
      // A forced transport gets 5 s to open (sockjs-client's own bound is
      // max(timeout, RTO x round trips), about 0.6-1 s on loopback, which
      // a busy 2-core machine can miss); default negotiation keeps the
      // client's defaults, since there the timeouts drive the fallback.
      const options = c.transports ? { timeout: 5000 } : undefined;
      const r = await runInPage(c.pageUrl, fn, { url: c.base + prefix, transports: c.transports, expect: c.expect, options }, c.loader);
      report(c.label, check, r);
    }
  }
  if (TRANSPORT_FILTER && !TRANSPORT_FILTER.has("extras")) return;

  // Default negotiation on the other two echo services.
  {
    const r = await runInPage(harness, 'echoBatch', { url: `${gwOrigin}/disabled_websocket_echo`, transports: null, expect: 'xhr-streaming' });
    report('matrix/default, websocket off', 'echo-batch', r);
  }
  // JSESSIONID over credentialed CORS, from the other origin on
  // xhr-streaming. 1: with no cookie, the gateway answers
  // `JSESSIONID=dummy`, which the browser stores only if those responses
  // allowed credentials. 2: with our own value in the jar, every response
  // must set that same value again, which happens only if the browser sent
  // it (the gateway would answer `dummy` to a request without it).
  {
    const jar = async () => (await context.cookies(gwOrigin)).filter((c) => c.name === 'JSESSIONID');
    await context.clearCookies();
    let r = await runInPage(harness, 'echoBatch', { url: `${gwOrigin}/cookie_needed_echo`, transports: ['xhr-streaming'], expect: 'xhr-streaming' });
    let got = await jar();
    if (r.ok && (got.length !== 1 || got[0].value !== 'dummy')) {
      r.ok = false;
      r.reason = `expected the cookie JSESSIONID=dummy stored from credentialed CORS responses, jar has ${JSON.stringify(got.map((c) => c.value))}`;
    }
    if (r.ok) {
      const mine = `bt${Date.now()}`;
      await context.clearCookies();
      await context.addCookies([{ name: 'JSESSIONID', value: mine, domain: '127.0.0.1', path: '/' }]);
      const r2 = await runInPage(harness, 'echoBatch', { url: `${gwOrigin}/cookie_needed_echo`, transports: ['xhr-streaming'], expect: 'xhr-streaming' });
      got = await jar();
      if (!r2.ok) r = r2;
      else if (got.length !== 1 || got[0].value !== mine) {
        r.ok = false;
        r.reason = `sent JSESSIONID=${mine}, the jar now has ${JSON.stringify(got.map((c) => c.value))}: the cookie was not sent, or not echoed`;
      } else {
        r.detail += `; JSESSIONID=dummy stored, then JSESSIONID=${mine} sent and echoed (CORS with credentials)`;
      }
    }
    await context.clearCookies();
    report('matrix/cookie_needed_echo', 'cookie+echo', r);
  }
}

// ------------------------------------------------------------------ relay
// A second gateway relays /relay-echo and /relay-close to the raw WebSocket
// endpoints of the first (its /echo and /close services as plain WebSocket
// upstreams): the browser speaks SockJS to the relay on every transport.
async function runRelay(upstream, pageOrigin, logDir) {
  const ws = `ws://127.0.0.1:${upstream.port}`;
  const relay = await procs.startGateway(GATEWAY_BIN, [
    '--relay', `/relay-echo=${ws}/echo/websocket`,
    '--relay', `/relay-close=${ws}/close/websocket`,
  ], path.join(logDir, 'relay-gateway.log'));
  const origin = `http://127.0.0.1:${relay.port}`;
  section(`relay: page ${pageOrigin}, gateway ${origin} relaying to ${ws}/echo/websocket and ${ws}/close/websocket`);
  const harness = `${pageOrigin}/harness.html`;
  for (const t of [...CROSS_ORIGIN_TRANSPORTS, null]) {
    const label = `relay/${t || 'default negotiation'}`;
    if (TRANSPORT_FILTER && !TRANSPORT_FILTER.has(t || 'websocket') && !TRANSPORT_FILTER.has(label)) continue;
    const options = t ? { timeout: 5000 } : undefined;
    const transports = t ? [t] : null;
    const expect = t || 'websocket';
    report(label, 'echo-batch', await runInPage(harness, 'echoBatch', { url: `${origin}/relay-echo`, transports, expect, options }));
    report(label, 'server-close', await runInPage(harness, 'serverClose', { url: `${origin}/relay-close`, transports, expect, options }));
  }
  return relay;
}

// ------------------------------------------------------------------ proxies
async function runProxies(gw, pageOrigin) {
  if (!fs.existsSync(NGINX)) throw new Error(`nginx not found at ${NGINX} (apt-get install -y nginx)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockjs-nginx-'));
  tmpDirs.push(dir);
  const [pNoUpgrade, pBuffering, pSameOrigin] = await procs.freePorts(3);
  const up = `http://127.0.0.1:${gw.port}`;
  const servers = [
    // 1. Refuses every WebSocket upgrade; otherwise a good streaming proxy.
    `  server {
    listen 127.0.0.1:${pNoUpgrade};
    add_header X-Browser-Test-Proxy no-upgrade always;
    location / {
      if ($http_upgrade != "") { return 403; }
      proxy_pass ${up};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 120s;
    }
  }`,
    // 2. Buffers whole responses and speaks HTTP/1.0 upstream (so no
    //    upgrade either); ignores the gateway's X-Accel-Buffering: no.
    `  server {
    listen 127.0.0.1:${pBuffering};
    add_header X-Browser-Test-Proxy buffering always;
    location / {
      proxy_pass ${up};
      proxy_http_version 1.0;
      proxy_buffering on;
      proxy_ignore_headers X-Accel-Buffering;
      proxy_buffer_size 64k;
      proxy_buffers 8 64k;
      proxy_busy_buffers_size 128k;
      proxy_read_timeout 120s;
    }
  }`,
    // 3. Same-origin front: serves the test page and forwards everything
    //    else, upgrades included, to the gateway.
    `  server {
    listen 127.0.0.1:${pSameOrigin};
    add_header X-Browser-Test-Proxy same-origin always;
    location = /__browser_tests__/sockjs.min.js { alias ${SOCKJS_MIN}; }
    location /__browser_tests__/ { alias ${PAGE_DIR}/; }
    location / {
      proxy_pass ${up};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_buffering off;
      proxy_read_timeout 120s;
    }
  }`,
  ];
  const ngx = await procs.startNginx(NGINX, dir, servers);
  try {
    for (const p of [pNoUpgrade, pBuffering, pSameOrigin]) await procs.waitForPort(p, 10000, ngx.child, 'nginx');
    // Each port is our nginx's, with the right server block.
    for (const [p, name] of [[pNoUpgrade, 'no-upgrade'], [pBuffering, 'buffering'], [pSameOrigin, 'same-origin']]) {
      const got = await new Promise((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port: p, path: '/echo', timeout: 5000 }, (res) => {
          res.resume();
          resolve(`${res.statusCode} ${res.headers['x-browser-test-proxy']}`);
        });
        req.on('timeout', () => req.destroy(new Error('timed out')));
        req.on('error', reject);
      });
      if (got !== `200 ${name}`) throw new Error(`127.0.0.1:${p} should be the ${name} proxy answering 200 for /echo, got "${got}"`);
    }
  } catch (e) {
    const err = fs.existsSync(path.join(dir, 'logs/error.log')) ? fs.readFileSync(path.join(dir, 'logs/error.log'), 'utf8') : '';
    throw new Error(`${e.message}\nnginx output:\n${ngx.log.lines.join('\n')}\nerror.log:\n${err}`);
  }
  section(`hostile proxies: nginx pid ${ngx.child.pid}, config ${ngx.confPath}`);

  const harness = `${pageOrigin}/harness.html`;
  const scenarios = [
    {
      label: 'proxy/no-upgrade (403 on Upgrade)', pageUrl: harness,
      url: `http://127.0.0.1:${pNoUpgrade}/echo`, expect: 'xhr-streaming',
    },
    {
      label: 'proxy/buffering HTTP/1.0', pageUrl: harness,
      url: `http://127.0.0.1:${pBuffering}/echo`, expect: ['xhr-polling', 'iframe-xhr-polling', 'jsonp-polling'],
    },
    // The oldest release and the one most deployed pages carry, through
    // the same two proxies.
    ...['1.0.0', '1.1.5'].flatMap((v) => [
      {
        label: `proxy/no-upgrade, sockjs-client ${v}`, pageUrl: `${pageOrigin}/releases/${v}/harness.html`,
        url: `http://127.0.0.1:${pNoUpgrade}/echo`, expect: 'xhr-streaming',
      },
      {
        label: `proxy/buffering, sockjs-client ${v}`, pageUrl: `${pageOrigin}/releases/${v}/harness.html`,
        url: `http://127.0.0.1:${pBuffering}/echo`, expect: ['xhr-polling', 'iframe-xhr-polling', 'jsonp-polling'],
      },
    ]),
    {
      label: 'proxy/same-origin, upgrades on', pageUrl: `http://127.0.0.1:${pSameOrigin}/__browser_tests__/harness.html`,
      url: `http://127.0.0.1:${pSameOrigin}/echo`, expect: 'websocket',
    },
  ];
  const accessLog = path.join(dir, 'logs/access.log');
  for (const s of scenarios) {
    const port = Number(new URL(s.url).port);
    const since = Date.now() / 1000 - 0.05;
    const r = await runInPage(s.pageUrl, 'echoBatch', { url: s.url, transports: null, expect: s.expect, openTimeout: 20000 });
    // nginx logs a request when it ends; a WebSocket ends only after the
    // page closed it, so wait (bounded) until the transport the session
    // ended on shows up in the log.
    const kind = { websocket: 'websocket', 'xhr-streaming': 'xhr_streaming', 'xhr-polling': 'xhr', 'jsonp-polling': 'jsonp' }[r.transport];
    const until = Date.now() + 3000;
    while (kind && !fallbackChain(accessLog, port, since).split(' -> ').some((x) => x.startsWith(kind + ' ')) && Date.now() < until) {
      await new Promise((res) => setTimeout(res, 50));
    }
    const chain = fallbackChain(accessLog, port, since);
    r.detail = `${r.detail}; via nginx: ${chain}`;
    if (!r.ok) r.reason = `${r.reason}; via nginx: ${chain}`;
    report(s.label, 'echo-batch', r);
  }
  return ngx;
}

// The transports the client tried through one nginx port since `since`
// (Unix seconds), in the order the requests started, from nginx's access log: "websocket 403 ->
// xhr_streaming 499 after 618ms -> ... -> xhr 200 x6".
function fallbackChain(accessLog, port, since = 0) {
  let text = '';
  try { text = fs.readFileSync(accessLog, 'utf8'); } catch (e) { return '(no access log)'; }
  const reqs = [];
  for (const line of text.split('\n')) {
    const m = /^([\d.]+) (\d+) (\w+) "([^"]*)" (\d+) up=\S+ upgrade="[^"]*" \d+ ([\d.]+)$/.exec(line);
    if (!m || Number(m[2]) !== port) continue;
    const t = /\/[^/]+\/[^/]+\/(websocket|xhr_streaming|xhr|eventsource|htmlfile|jsonp)(\?|$)/.exec(m[4].split('?')[0] + '?');
    if (!t) continue;
    const session = m[4].split('/').slice(-2, -1)[0];
    const start = Number(m[1]) - Number(m[6]);
    if (start < since) continue;
    reqs.push({ start, kind: t[1], status: m[5], ms: Math.round(Number(m[6]) * 1000), session });
  }
  reqs.sort((a, b) => a.start - b.start);
  const steps = [];
  for (const q of reqs) {
    const last = steps[steps.length - 1];
    if (last && last.session === q.session && last.kind === q.kind) { last.count++; continue; }
    steps.push({ ...q, count: 1 });
  }
  if (!steps.length) return '(no transport requests logged)';
  return steps.map((s) => s.count > 1 ? `${s.kind} x${s.count}`
    : `${s.kind} ${s.status}${s.status === '499' ? ` (client gave up after ${s.ms} ms)` : ''}`).join(' -> ');
}

// ------------------------------------------------------------------ main
const tmpDirs = [];

async function main() {
  const budget = setTimeout(() => {
    console.error(`\nFAIL: the browser run exceeded its budget of ${TOTAL_BUDGET_MS / 1000} s`);
    procs.killAllNow();
    process.exit(1);
  }, TOTAL_BUDGET_MS);
  budget.unref();

  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockjs-browser-tests-'));
  tmpDirs.push(logDir);
  const accessLog = path.join(logDir, 'access.jsonl');
  const gw = await procs.startGateway(GATEWAY_BIN, [
    '--metrics', '127.0.0.1:0', '--access-log', accessLog, '--access-log-format', 'json',
  ], path.join(logDir, 'gateway.log'));
  console.log(`gateway: ${GATEWAY_BIN} ${gw.args.join(' ')} -> port ${gw.port} (pid ${gw.child.pid})`);
  const gatewayLogs = [['gateway', path.join(logDir, 'gateway.log'), gw]];

  const releasePages = releases.pageFiles(PAGE_DIR, logDir);
  const page = await procs.startPageServer({
    '/harness.html': path.join(PAGE_DIR, 'harness.html'),
    '/harness.js': path.join(PAGE_DIR, 'harness.js'),
    '/sockjs.min.js': SOCKJS_MIN,
    ...releasePages.files,
    ...stomp.pageFiles(PAGE_DIR, path.join(HERE, 'node_modules')),
  });
  const pageOrigin = `http://127.0.0.1:${page.port}`;
  console.log(`test page origin: ${pageOrigin} (cross-origin to the gateway)`);

  let ua;
  try {
    ua = await launchBrowser();
  } catch (e) {
    throw new Error(`could not start Chromium (${CHROMIUM}): ${e.message.split('\n').slice(0, 6).join('\n')}`);
  }
  console.log(`browser: ${ua}`);

  if (ONLY.has('matrix')) await runMatrix(gw, pageOrigin);
  if (ONLY.has('releases')) {
    await releases.runReleases({
      context, runInPage, report, section, pageOrigin, gw, sameOriginLoader,
      sources: releasePages.sources, pageFiles: releasePages.files, logFile: path.join(logDir, 'gateway.log'),
    });
  }
  if (ONLY.has('proxies')) await runProxies(gw, pageOrigin);
  if (ONLY.has('forward-proxy')) {
    // squid works as the `proxy` user: its directory must not sit in ours (0700).
    const squidDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockjs-squid-'));
    tmpDirs.push(squidDir);
    await runForwardProxy({ startChromium, runInPage, report, section, pageOrigin, gw, squidDir });
  }
  if (ONLY.has('relay')) {
    const relay = await runRelay(gw, pageOrigin, logDir);
    gatewayLogs.push(['relay gateway', path.join(logDir, 'relay-gateway.log'), relay]);
  }
  if (ONLY.has('stomp')) {
    const rabbitDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockjs-rabbitmq-'));
    tmpDirs.push(rabbitDir);
    const { gateways } = await stomp.runStomp({
      context, runInPage, report, section, pageOrigin, logDir, rabbitDir, root: ROOT,
      gatewayBin: GATEWAY_BIN, transportFilter: TRANSPORT_FILTER,
    });
    gatewayLogs.push(...gateways);
  }
  if (ONLY.has('cluster')) {
    const cluster = await runCluster({
      context, runInPage, report, section, pageOrigin, logDir, gatewayBin: GATEWAY_BIN, nginx: NGINX,
      checks: CHECKS, transports: CROSS_ORIGIN_TRANSPORTS, sameOriginLoader, transportFilter: TRANSPORT_FILTER,
    });
    cluster.nodes.forEach((n, i) => gatewayLogs.push([`cluster node${i}`, n.logFile, n]));
  }
  if (ONLY.has('demo')) {
    section(`demo page: http://127.0.0.1:${gw.port}/${DEMO_FROM_FILE ? ' (demo.html answered from the file, --demo-from-file)' : ''}`);
    const demoFile = path.join(ROOT, 'src/bin/sockjs-gateway/demo.html');
    const shot = path.join(ROOT, 'target/demo-screenshot.png');
    for (const r of await runDemo({ context, gwPort: gw.port, fromFile: DEMO_FROM_FILE ? demoFile : null, screenshot: shot, verbose: VERBOSE })) {
      report('demo', r.check, r);
    }
  }
  // The matrix is what puts every transport in the log.
  if (ONLY.has('matrix') && !TRANSPORT_FILTER) {
    await closeAllPages();
    section(`access log: ${accessLog}`);
    for (const r of await checkAccessLog(gw, accessLog)) report('access log', r.check, r);
  }
  for (const [name, logFile, proc] of gatewayLogs) {
    const panics = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => /panicked at|ERROR/.test(l));
    if (panics.length) {
      report(name, 'log', { ok: false, reason: `the ${name} logged ${panics.length} panic/error line(s), first: ${panics[0].slice(0, 300)}` });
    }
    if (proc.child.exited) {
      report(name, 'alive', { ok: false, reason: `the ${name} exited during the run: ${JSON.stringify(proc.child.exited)}` });
    }
  }
  clearTimeout(budget);
}

async function cleanup() {
  if (context) await context.close().catch(() => {});
  await procs.stopAll();
  if (!KEEP_TMP) for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
  else console.log(`kept: ${tmpDirs.join(' ')}`);
}

function summary(fatal) {
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed + (fatal ? 1 : 0);
  console.log(`\n== summary (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  const byScenario = new Map();
  for (const r of results) {
    const key = r.scenario;
    const s = byScenario.get(key) || { pass: 0, fail: 0 };
    if (r.ok) s.pass++; else s.fail++;
    byScenario.set(key, s);
  }
  for (const [k, s] of byScenario) console.log(`  ${pad(k, 38)} ${s.pass} passed, ${s.fail} failed`);
  for (const r of results.filter((x) => !x.ok)) console.log(`  FAILED: ${r.scenario} ${r.check}: ${r.reason}`);
  if (fatal) console.log(`  FATAL: ${fatal}`);
  if (notApplicable.length) console.log(`  not applicable in Chromium (not counted): ${notApplicable.map((n) => n.name).join(', ')}`);
  console.log(`browser-tests: ${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0;
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { procs.killAllNow(); process.exit(130); });
}
process.on('exit', () => procs.killAllNow());

main().then(async () => {
  await cleanup();
  process.exit(summary(null) ? 0 : 1);
}, async (e) => {
  console.error(`\nFATAL: ${e.stack || e.message}`);
  await cleanup();
  summary(e.message.split('\n')[0]);
  process.exit(1);
});
