'use strict';
// The real sockjs-client through three gateway nodes (cluster mode, one
// redis-server) behind an nginx round-robin balancer with no stickiness:
// every transport and check of the matrix, each HTTP session's requests
// seen spread over several nodes in nginx's log; then one node is killed
// (SIGKILL) with sessions open on every transport, and restarted.
//
// What the failover part holds the gateway to (README, Cluster):
// - sessions the killed node owned end for their clients within
//   OWNER_LOSS_BOUND_MS with c[4503,"Session owner lost"]: from the live
//   node their receiver was forwarded through, or from the one their next
//   request reached. 1006 only when nginx's log shows one of their
//   requests cut in flight through the killed node itself;
// - sessions other nodes own go on: every message echoed once, in order.
//   The one exception is a request that was passing through the killed
//   node at that moment: nginx cannot replay it (a long-poll is a POST, a
//   stream has begun), the client gets a network error and sockjs-client
//   itself closes with 1006. Those are read from nginx's log and reported;
//   any other survivor that closes, loses or reorders a message fails;
// - the restarted node takes new sessions again.

const fs = require('fs');
const http = require('http');
const path = require('path');
const procs = require('./procs');

const REDIS_SERVER = process.env.REDIS_SERVER || '/usr/bin/redis-server';
const NODES = 3;
const OWNER_LOSS_BOUND_MS = 15000;
const HELD_TRANSPORTS = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource', 'jsonp-polling', 'iframe-xhr-polling'];
const HELD_PER_TRANSPORT = 3;
const ECHOES_AFTER_KILL = 20;

// One access-log line per request: end time, duration, URI, status, the
// upstream(s) nginx tried, in order.
const LOG_FORMAT = `'$msec $request_time "$request_uri" $status "$upstream_addr" "$upstream_status"'`;

function parseLog(file) {
  let text = '';
  try { text = fs.readFileSync(file, 'utf8'); } catch (e) { return []; }
  const out = [];
  for (const line of text.split('\n')) {
    const m = /^([\d.]+) ([\d.]+) "([^"]*)" (\d+) "([^"]*)" "([^"]*)"$/.exec(line);
    if (!m) continue;
    const uri = m[3].split('?')[0];
    const s = /\/[^/]+\/([^/]+)\/(websocket|xhr_streaming|xhr_send|xhr|eventsource|htmlfile|jsonp_send|jsonp)$/.exec(uri);
    const upstreams = m[5].split(/,\s*/).filter((u) => /:\d+$/.test(u));
    out.push({
      end: Number(m[1]) * 1000, ms: Number(m[2]) * 1000, uri, status: Number(m[4]),
      session: s ? s[1] : null, kind: s ? s[2] : null, upstreams, last: upstreams[upstreams.length - 1] || null,
    });
  }
  return out;
}

async function ownerOf(redisPort, session) {
  const node = await procs.redisCommand(redisPort, ['GET', `sockjs:session:/echo:${session}`]);
  if (!node) return null;
  const address = await procs.redisCommand(redisPort, ['GET', `sockjs:node:${node}`]);
  return { node, address };
}

function get(port, urlPath) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, timeout: 5000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

async function startNode(gatewayBin, redis, logDir, i, listen) {
  const log = path.join(logDir, `cluster-node-${i}${listen ? '-restarted' : ''}.log`);
  const node = await procs.startGateway(gatewayBin, ['--redis', redis.url, '--metrics', '127.0.0.1:0'], log, listen);
  node.logFile = log;
  node.address = `127.0.0.1:${node.port}`;
  return node;
}

async function runCluster(t) {
  const { context, runInPage, report, section, pageOrigin, logDir, gatewayBin, nginx } = t;
  if (!fs.existsSync(REDIS_SERVER)) throw new Error(`redis-server not found at ${REDIS_SERVER} (apt-get install -y redis-server)`);
  const redis = await procs.startRedis(REDIS_SERVER);
  const nodes = [];
  for (let i = 0; i < NODES; i++) nodes.push(await startNode(gatewayBin, redis, logDir, i));

  const dir = fs.mkdtempSync(path.join(logDir, 'nginx-cluster-'));
  // One port for the matrix, and one per held session of the failover
  // part: Chromium opens at most 6 connections per host and port, and each
  // held session keeps a receiver hanging and a send in flight.
  const ports = await procs.freePorts(1 + HELD_TRANSPORTS.length * HELD_PER_TRANSPORT);
  const port = ports[0];
  const accessLog = path.join(dir, 'logs/cluster-access.log');
  const server = `  log_format cluster ${LOG_FORMAT};
  map $http_upgrade $cluster_connection { default upgrade; '' ''; }
  upstream sockjs_nodes {
${nodes.map((n) => `    server ${n.address} max_fails=1 fail_timeout=1s;`).join('\n')}
    keepalive 32;
    # Below the nodes' 5 s keep-alive: a POST sent on a connection a node
    # is closing is not retried, and the client would get a 502.
    keepalive_timeout 2s;
  }
  server {
${ports.map((p) => `    listen 127.0.0.1:${p};`).join('\n')}
    access_log ${accessLog} cluster;
    location / {
      proxy_pass http://sockjs_nodes;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $cluster_connection;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 120s;
    }
  }`;
  const ngx = await procs.startNginx(nginx, dir, [server]);
  await procs.waitForPort(port, 10000, ngx.child, 'nginx (cluster balancer)');
  for (let i = 0; i < NODES; i++) {
    const status = await get(port, '/echo');
    if (status !== 200) throw new Error(`the balancer answered ${status} for /echo`);
  }
  const balancer = `http://127.0.0.1:${port}`;
  const byAddress = new Map(nodes.map((n, i) => [n.address, i]));
  const nodeName = (address) => (byAddress.has(address) ? `node${byAddress.get(address)}` : address);
  section(`cluster: ${NODES} nodes (${nodes.map((n) => n.port).join(', ')}) on redis ${redis.port}, ` +
    `nginx round robin at ${balancer}, page ${pageOrigin}`);

  // Which nodes served a session's requests, from nginx's log (a request
  // is logged when it ends: wait, bounded, for the session's last ones).
  async function spread(session, wantNodes) {
    const until = Date.now() + 3000;
    for (;;) {
      const reqs = parseLog(accessLog).filter((r) => r.session === session);
      const used = new Map();
      for (const r of reqs) used.set(r.last, (used.get(r.last) || 0) + 1);
      if (used.size >= wantNodes || Date.now() > until) {
        return { count: used.size, text: [...used].map(([a, n]) => `${nodeName(a)} x${n}`).join(', ') };
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  // 1. The matrix, through the balancer.
  const harness = `${pageOrigin}/harness.html`;
  const configs = t.transports.map((tr) => ({ label: `cluster/${tr}`, transports: [tr], expect: tr, pageUrl: harness }));
  configs.push({
    label: 'cluster/htmlfile (same-origin page)', transports: ['htmlfile'], expect: 'htmlfile',
    pageUrl: null, loader: t.sameOriginLoader(balancer),
  });
  configs.push({ label: 'cluster/default negotiation', transports: null, expect: 'websocket', pageUrl: harness });
  for (const c of configs) {
    if (t.transportFilter && !t.transportFilter.has(c.expect) && !t.transportFilter.has(c.label)) continue;
    for (const [check, fn, prefix] of t.checks) {
      const options = c.transports ? { timeout: 5000 } : undefined;
      const r = await runInPage(c.pageUrl, fn, { url: balancer + prefix, transports: c.transports, expect: c.expect, options }, c.loader);
      // Non-sticky for real: an HTTP session's requests went to more than
      // one node (its sends and receivers follow nginx's round robin).
      if (r.ok && check === 'echo-batch' && c.expect !== 'websocket') {
        const s = await spread(r.session, 2);
        if (s.count < 2) {
          r.ok = false;
          r.reason = `every request of session ${r.session} went to one node (${s.text}): the balancer was sticky?`;
        } else {
          r.detail += `; requests over ${s.count} nodes (${s.text})`;
        }
      }
      report(c.label, check, r);
    }
  }

  // 2. Kill a node with sessions open on every transport.
  if (!t.transportFilter || t.transportFilter.has('failover')) {
    const heldUrls = ports.slice(1).map((p) => `http://127.0.0.1:${p}/echo`);
    await failover({ ...t, redis, nodes, balancer, heldUrls, accessLog, nodeName, harness, startNode: (i, listen) => startNode(gatewayBin, redis, logDir, i, listen) });
  }
  return { redis, nodes, ngx };
}

async function failover(t) {
  const { context, report, section, redis, nodes, heldUrls, accessLog, nodeName, harness } = t;
  const page = await context.newPage();
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  try {
    await page.goto(harness, { waitUntil: 'load', timeout: 15000 });
    await page.waitForFunction(() => !!window.sockjsTests && !!window.SockJS, null, { timeout: 10000 });
    // Opened one after another, a polling session makes 4 requests (poll,
    // send, poll, poll): with 3 nodes in round robin its hanging poll would
    // always sit on its owner. 0, 1 or 2 more echoes (2 requests each) put
    // it on each node in turn, so some hang on a live node that forwards
    // them to the owner about to be killed.
    const held = heldUrls.map((url, i) => ({
      url,
      transport: HELD_TRANSPORTS[i % HELD_TRANSPORTS.length],
      extraEchoes: Math.floor(i / HELD_TRANSPORTS.length),
    }));
    const opened = await page.evaluate((a) => window.sockjsTests.holdOpen(a), { sessions: held });
    if (!opened.ok) throw new Error(`opening the held sessions: ${opened.reason}`);

    // Owners: HTTP sessions from their Redis record; WebSocket sessions
    // stay on the node that took the upgrade, counted by each node's metrics.
    for (const s of opened.sessions) {
      if (s.transport === 'websocket') continue;
      const owner = await ownerOf(redis.port, s.session);
      if (!owner) throw new Error(`no owner record in Redis for ${s.transport} session ${s.session}`);
      s.owner = owner.address;
    }
    const wsOn = [];
    for (const n of nodes) {
      wsOn.push(await procs.scrapeMetric(n.metricsPort, 'sockjs_sessions_open', { service: '/echo', transport: 'websocket' }));
    }
    const owned = nodes.map((n) => opened.sessions.filter((s) => s.owner === n.address).length);
    // The node owning most HTTP sessions among those holding a WebSocket
    // session too, so both kinds of loss are checked.
    const candidates = nodes.map((n, i) => i).filter((i) => wsOn[i] > 0 && owned[i] > 0);
    const pool = candidates.length ? candidates : nodes.map((n, i) => i);
    const victim = pool.reduce((best, i) => (owned[i] > owned[best] ? i : best), pool[0]);
    if (owned.filter((c, i) => i !== victim && c > 0).length === 0) {
      throw new Error(`the held HTTP sessions all landed on one node (${owned.join('/')}): nothing to compare`);
    }
    const dead = nodes[victim];
    section(`cluster failover: ${opened.sessions.length} sessions open (HTTP sessions owned ${owned.map((c, i) => `node${i}:${c}`).join(' ')}; ` +
      `WebSocket sessions ${wsOn.map((c, i) => `node${i}:${c}`).join(' ')}); killing node${victim} (pid ${dead.child.pid}, SIGKILL)`);

    const since = Date.now();
    const exited = new Promise((r) => dead.child.once('exit', r));
    dead.child.kill('SIGKILL');
    await exited;
    const after = await page.evaluate((a) => window.sockjsTests.heldEcho(a),
      { count: ECHOES_AFTER_KILL, timeout: OWNER_LOSS_BOUND_MS + 5000, since });
    const log = parseLog(accessLog);
    const cutInFlight = (session) => log.some((r) => r.session === session && r.last === dead.address && r.end >= since - 50);

    // The victim's sessions whose hanging receiver went through a live node.
    const forwardedAtKill = (session) => log.some((r) => r.session === session && r.last !== dead.address &&
      ['xhr', 'jsonp', 'xhr_streaming', 'eventsource', 'htmlfile'].includes(r.kind) && r.end >= since - 50);
    let lostFromLiveNode = 0;
    const closedCodes = {};
    const fails = [];
    let survived = 0;
    let cut = 0;
    let wsClosed = 0;
    for (const o of after.outcomes) {
      const s = opened.sessions[o.index];
      const what = `${s.transport} session ${s.session} (${s.owner ? 'owned by ' + nodeName(s.owner) : 'WebSocket'})`;
      if (o.close) closedCodes[o.close.code] = (closedCodes[o.close.code] || 0) + 1;
      if (s.transport === 'websocket') {
        if (o.close) {
          wsClosed++;
          if (o.closedAfterMs > OWNER_LOSS_BOUND_MS) fails.push(`${what} closed only after ${o.closedAfterMs} ms`);
        } else if (o.error || o.echoed !== ECHOES_AFTER_KILL) fails.push(`${what}: ${o.error || `echoed ${o.echoed}/${ECHOES_AFTER_KILL}`}`);
        else survived++;
      } else if (s.owner === dead.address) {
        if (!o.close) fails.push(`${what} still open after its owner died (${o.error || `echoed ${o.echoed}`})`);
        else if (o.closedAfterMs > OWNER_LOSS_BOUND_MS) fails.push(`${what} closed only after ${o.closedAfterMs} ms`);
        else if (o.close.code === 1006 && cutInFlight(s.session)) cut++;
        else if (o.close.code === 4503 && forwardedAtKill(s.session)) lostFromLiveNode++;
        else if (o.close.code !== 4503) fails.push(`${what} closed with ${o.close.code} "${o.close.reason}", expected 4503 (1006 only for a request cut in flight through the killed node)`);
      } else if (o.close || o.error || o.echoed !== ECHOES_AFTER_KILL) {
        if (o.close && o.close.code === 1006 && cutInFlight(s.session)) cut++;
        else fails.push(`${what} (owner alive) ${o.close ? `closed ${o.close.code} "${o.close.reason}"` : o.error || `echoed ${o.echoed}/${ECHOES_AFTER_KILL}`}`);
      } else {
        survived++;
      }
    }
    if (wsClosed !== wsOn[victim]) fails.push(`${wsClosed} WebSocket sessions closed, the killed node held ${wsOn[victim]}`);
    if (dialogs.length) fails.push(`SCRIPT INJECTION: dialog ${dialogs[0]}`);
    const lostOwner = opened.sessions.filter((s) => s.owner === dead.address);
    const slowest = Math.max(0, ...after.outcomes.filter((o) => o.close).map((o) => o.closedAfterMs));
    report('cluster/failover', 'node killed', {
      ok: fails.length === 0,
      reason: fails.slice(0, 4).join('; ') + (fails.length > 4 ? `; and ${fails.length - 4} more` : ''),
      detail: `${lostOwner.length} HTTP + ${wsOn[victim]} WebSocket sessions on the killed node closed ` +
        `(codes ${JSON.stringify(closedCodes)}, last ${slowest} ms after the kill); ${survived} others echoed ${ECHOES_AFTER_KILL} in order; ` +
        `${cut} sessions cut in flight through the killed node (1006); ${lostFromLiveNode} of the killed node's sessions told by the live node their receiver hung on (4503)`,
    });
    await page.evaluate(() => window.sockjsTests.releaseHeld()).catch(() => {});

    // 3. The node comes back on its address and takes new sessions.
    const restarted = await t.startNode(victim, dead.address);
    nodes[victim] = restarted;
    const rejoin = await rejoined(t, restarted);
    report('cluster/failover', 'node restarted', rejoin);
  } finally {
    await page.close().catch(() => {});
  }
}

// New sessions through the balancer, one at a time, until one is owned by
// the restarted node: nginx re-admits it once its fail_timeout has passed,
// and round robin then reaches it within a few sessions. Every session
// opened on the way must echo too.
const REJOIN_BOUND_MS = 20000;
const REJOIN_POLL_MS = 250;

async function rejoined(t, node) {
  const { context, redis, heldUrls, harness } = t;
  const page = await context.newPage();
  try {
    await page.goto(harness, { waitUntil: 'load', timeout: 15000 });
    await page.waitForFunction(() => !!window.sockjsTests && !!window.SockJS, null, { timeout: 10000 });
    const owners = [];
    let mine = 0;
    const deadline = Date.now() + REJOIN_BOUND_MS;
    for (let i = 0; mine === 0 && Date.now() < deadline; i++) {
      const opened = await page.evaluate((a) => window.sockjsTests.holdOpen(a),
        { sessions: [{ url: heldUrls[i % heldUrls.length], transport: 'xhr-polling' }] });
      if (!opened.ok) return { ok: false, reason: `opening session ${i + 1} after the restart: ${opened.reason}` };
      const owner = await ownerOf(redis.port, opened.sessions[opened.sessions.length - 1].session);
      owners.push(owner ? t.nodeName(owner.address) : 'none');
      if (owner && owner.address === node.address) mine++;
      else await page.waitForTimeout(REJOIN_POLL_MS);
    }
    const after = await page.evaluate((a) => window.sockjsTests.heldEcho(a), { count: 10, timeout: 10000, since: Date.now() });
    const bad = after.outcomes.filter((o) => o.close || o.error || o.echoed !== 10);
    await page.evaluate(() => window.sockjsTests.releaseHeld()).catch(() => {});
    if (mine === 0) return { ok: false, reason: `none of ${owners.length} new sessions in ${REJOIN_BOUND_MS} ms is owned by the restarted node (owners: ${owners.join(', ')})` };
    if (bad.length) return { ok: false, reason: `after the restart: ${JSON.stringify(bad[0])}` };
    return {
      ok: true, transport: 'xhr-polling',
      detail: `pid ${node.child.pid} on ${node.address} owns session ${owners.length} of those opened after the restart (${owners.join(', ')}); all ${owners.length} echoed 10 in order`,
    };
  } finally {
    await page.close().catch(() => {});
  }
}

module.exports = { runCluster };
