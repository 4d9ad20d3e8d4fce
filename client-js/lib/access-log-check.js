'use strict';
// The main gateway writes a JSON-lines access log for the whole browser run
// (`--access-log FILE --access-log-format json`). Once every page is gone,
// that log is read back and held against the gateway's own metrics: one
// line per ended session, every field present, the conventional services
// ending the way they must, and the same message counts as the metrics.

const fs = require('fs');
const procs = require('./procs');

const FIELDS = ['time', 'service', 'session', 'transport', 'transports', 'client', 'start', 'duration_ms',
  'messages_in', 'bytes_in', 'messages_out', 'bytes_out', 'end', 'code', 'reason'];
const ENDS = new Set(['closed', 'client', 'timeout', 'interrupted', 'send_timeout', 'shutdown']);
// Server-side names: iframe-* and jsonp are the same transports to the server.
const TRANSPORTS_SEEN = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource', 'htmlfile', 'jsonp-polling'];

// Waits (bounded) until no session is open and every closed one has its
// line written, then checks the file. Resolves with report entries.
async function checkAccessLog(gw, file, boundMs = 20000) {
  const until = Date.now() + boundMs;
  let open = -1; let closed = -1; let written = -1;
  for (;;) {
    open = await procs.scrapeMetric(gw.metricsPort, 'sockjs_sessions_open', {});
    closed = await procs.scrapeMetric(gw.metricsPort, 'sockjs_sessions_closed_total', {});
    written = await procs.scrapeMetric(gw.metricsPort, 'sockjs_access_log_lines_total', {});
    if (open === 0 && closed === written) break;
    if (Date.now() > until) {
      return [{ check: 'all written', ok: false, reason: `after ${boundMs} ms: ${open} session(s) still open, ${closed} closed, ${written} line(s) written` }];
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const dropped = await procs.scrapeMetric(gw.metricsPort, 'sockjs_access_log_dropped_total', {});
  const text = fs.readFileSync(file, 'utf8');
  const lines = text.split('\n').filter(Boolean);
  const problems = [];
  const records = [];
  lines.forEach((line, i) => {
    let r;
    try { r = JSON.parse(line); } catch (e) { problems.push(`line ${i + 1} is not JSON: ${line.slice(0, 120)}`); return; }
    const missing = FIELDS.filter((f) => !(f in r));
    if (missing.length) problems.push(`line ${i + 1} lacks ${missing.join(', ')}`);
    if (!ENDS.has(r.end)) problems.push(`line ${i + 1}: end ${JSON.stringify(r.end)}`);
    if (!(Date.parse(r.time) >= Date.parse(r.start)) || !(r.duration_ms >= 0)) problems.push(`line ${i + 1}: time ${r.time}, start ${r.start}, duration ${r.duration_ms} ms`);
    if (r.client !== '127.0.0.1') problems.push(`line ${i + 1}: client ${r.client}`);
    records.push(r);
  });
  const out = [];
  const detail = (ok, check, what) => out.push(ok ? { check, ok, detail: what } : { check, ok, reason: what });
  detail(lines.length === written && dropped === 0 && problems.length === 0, 'one line per session',
    problems.length ? problems.slice(0, 3).join('; ') : `${lines.length} lines for ${closed} ended sessions (metrics: ${written} written, ${dropped} dropped), every field present`);

  const echo = records.filter((r) => r.service === '/echo');
  const seen = new Set(echo.map((r) => r.transport));
  const unseen = TRANSPORTS_SEEN.filter((t) => !seen.has(t));
  detail(unseen.length === 0, 'every transport', unseen.length ? `no /echo line for ${unseen.join(', ')}; seen ${[...seen].join(', ')}`
    : `/echo lines on ${[...seen].sort().join(', ')}`);

  const close = records.filter((r) => r.service === '/close');
  const wrong = close.filter((r) => r.end !== 'closed' || r.code !== 3000 || r.reason !== 'Go away!');
  detail(close.length > 0 && wrong.length === 0, '/close ends 3000',
    wrong.length ? `${wrong.length} of ${close.length} /close lines: ${JSON.stringify(wrong[0])}` : `${close.length} /close lines, each end=closed code=3000 "Go away!"`);

  // Every message counted by the metrics is in some line, per service and direction.
  const mismatches = [];
  const services = [...new Set(records.map((r) => r.service))].sort();
  for (const service of services) {
    const mine = records.filter((r) => r.service === service);
    for (const dir of ['in', 'out']) {
      const logged = mine.reduce((n, r) => n + r[`messages_${dir}`], 0);
      const bytes = mine.reduce((n, r) => n + r[`bytes_${dir}`], 0);
      const counted = await procs.scrapeMetric(gw.metricsPort, 'sockjs_messages_total', { service, direction: dir });
      const countedBytes = await procs.scrapeMetric(gw.metricsPort, 'sockjs_bytes_total', { service, direction: dir });
      if (logged !== counted || bytes !== countedBytes) mismatches.push(`${service} ${dir}: log ${logged}/${bytes}B, metrics ${counted}/${countedBytes}B`);
    }
  }
  const echoIn = echo.reduce((n, r) => n + r.messages_in, 0);
  const echoOut = echo.reduce((n, r) => n + r.messages_out, 0);
  if (echoIn !== echoOut) mismatches.push(`/echo echoed ${echoOut} of ${echoIn} messages`);
  detail(mismatches.length === 0, 'traffic', mismatches.length ? mismatches.join('; ')
    : `message and byte counts equal the metrics for ${services.length} services; /echo ${echoIn} in, ${echoOut} out`);
  return out;
}

module.exports = { checkAccessLog };
