'use strict';
// Behind a corporate LAN's forward proxy: Debian's squid, configured as
// such proxies usually are (CONNECT only to 443, its memory cache on), and a
// second Chromium that sends everything through it, loopback included
// (--proxy-bypass-list=<-loopback>). WebSocket cannot pass (Chromium
// tunnels ws:// through CONNECT), so default negotiation must fall back to
// an HTTP transport; every HTTP transport must work through it, and so
// must old releases' iframe transports, after a newer release has cached
// the iframe page (one cached page serves every release). squid's access
// log must show each session's requests, so none bypassed it.

const fs = require('fs');
const procs = require('./procs');

const SQUID = process.env.SQUID || '/usr/sbin/squid';
const HTTP_TRANSPORTS = [
  'xhr-streaming', 'xhr-polling', 'eventsource',
  'iframe-eventsource', 'iframe-htmlfile', 'iframe-xhr-polling', 'jsonp-polling',
];

async function runForwardProxy(t) {
  const { startChromium, runInPage, report, section, pageOrigin, gw, squidDir } = t;
  if (!fs.existsSync(SQUID)) throw new Error(`squid not found at ${SQUID} (apt-get install -y squid)`);
  const squid = await procs.startSquid(SQUID, squidDir);
  const { context } = await startChromium([
    `--proxy-server=http://127.0.0.1:${squid.port}`, '--proxy-bypass-list=<-loopback>',
  ]);
  const gwOrigin = `http://127.0.0.1:${gw.port}`;
  section(`corporate forward proxy: squid pid ${squid.child.pid} on 127.0.0.1:${squid.port} (CONNECT to 443 only, caching), ` +
    `a Chromium with --proxy-server; page ${pageOrigin}, gateway ${gwOrigin}`);
  const runs = [
    { label: 'default negotiation', version: null, transports: null, expect: ['xhr-streaming', 'xhr-polling', 'iframe-xhr-polling'] },
    ...HTTP_TRANSPORTS.map((tr) => ({ label: tr, version: null, transports: [tr], expect: tr })),
    { label: 'release 1.0.0 default negotiation', version: '1.0.0', transports: null, expect: ['xhr-streaming', 'xhr-polling', 'iframe-xhr-polling'] },
    { label: 'release 1.0.0 iframe-xhr-polling', version: '1.0.0', transports: ['iframe-xhr-polling'], expect: 'iframe-xhr-polling' },
    { label: 'release 1.1.5 iframe-eventsource', version: '1.1.5', transports: ['iframe-eventsource'], expect: 'iframe-eventsource' },
  ];
  try {
    for (const run of runs) {
      const harness = run.version ? `${pageOrigin}/releases/${run.version}/harness.html` : `${pageOrigin}/harness.html`;
      const options = run.transports ? { timeout: 5000 } : undefined;
      const r = await runInPage(harness, 'echoBatch', {
        url: `${gwOrigin}/echo`, transports: run.transports, expect: run.expect, options, openTimeout: 20000,
      }, null, context);
      if (r.ok) {
        // squid logs a request when it ends; wait (bounded) for this session's.
        const seen = await waitForLog(squid.accessLog, (text) => r.session && text.includes(`/${r.session}/`), 5000);
        if (!seen) {
          r.ok = false;
          r.reason = `session ${r.session} does not appear in squid's access log: it bypassed the proxy`;
        } else {
          r.detail = `${r.detail}; via squid: ${squidSummary(seen, r.session)}`;
        }
      }
      report(`forward proxy/${run.label}`, 'echo-batch', r);
    }
    const log = fs.readFileSync(squid.accessLog, 'utf8');
    const connects = log.split('\n').filter((l) => / CONNECT 127\.0\.0\.1:/.test(l));
    const refused = connects.filter((l) => /\/403 /.test(l));
    report('forward proxy', 'websocket refused', connects.length > 0 && refused.length === connects.length
      ? { ok: true, detail: `${connects.length} WebSocket CONNECTs, each refused with 403 by squid` }
      : { ok: false, reason: `expected squid to refuse every CONNECT with 403; CONNECT lines: ${connects.slice(0, 3).join(' | ') || 'none'}` });
  } finally {
    await context.close().catch(() => {});
  }
}

async function waitForLog(file, pred, ms) {
  const until = Date.now() + ms;
  for (;;) {
    const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    if (pred(text)) return text;
    if (Date.now() > until) return null;
    await new Promise((r) => setTimeout(r, 50));
  }
}

// "xhr_streaming 200 x1, xhr_send 204 x3": the session's requests by kind.
function squidSummary(text, session) {
  const counts = new Map();
  for (const line of text.split('\n')) {
    if (!line.includes(`/${session}/`)) continue;
    const m = / \S+\/(\d{3}) \d+ \w+ \S*\/([a-z_]+)(?:\?\S*)? /.exec(line);
    if (!m) continue;
    const key = `${m[2]} ${m[1]}`;
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  return [...counts].map(([k, n]) => `${k} x${n}`).join(', ');
}

module.exports = { runForwardProxy };
