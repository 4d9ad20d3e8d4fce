'use strict';
// Processes and servers the browser tests start: the gateway binary, nginx,
// and a small static server for the cross-origin test page. Everything
// listens on 127.0.0.1 only; everything started here is stopped by its own
// PID (see stopAll), also when the run fails.

const { spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');

const started = [];   // { name, child } for everything we spawned
const closers = [];   // async functions closing in-process servers

function deadline(ms, what) {
  let timer;
  const p = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  p.cancel = () => clearTimeout(timer);
  return p;
}

// Keeps the last lines of a stream (and optionally copies them to a file)
// so that it never blocks the child, and so failures can show the tail.
function drain(stream, sink, onLine) {
  let partial = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk) => {
    if (sink.file) sink.file.write(chunk);
    partial += chunk;
    let i;
    while ((i = partial.indexOf('\n')) !== -1) {
      const line = partial.slice(0, i);
      partial = partial.slice(i + 1);
      sink.lines.push(line);
      if (sink.lines.length > 200) sink.lines.shift();
      if (onLine) onLine(line);
    }
  });
}

// Spawns a server process, tracked so that stopAll stops it by PID; keeps
// the last lines of its output in `log` (and in opts.logFile), marks
// `child.exited`; resolves once the process exists.
async function spawnServer(name, bin, args, opts = {}) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env });
  started.push({ name, child });
  const log = { lines: [], file: opts.logFile || null };
  drain(child.stdout, log);
  drain(child.stderr, log);
  child.on('exit', (code, signal) => { child.exited = { code, signal }; });
  await new Promise((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (e) => reject(new Error(`cannot start ${name}: ${e.message}${opts.hint ? ` (${opts.hint})` : ''}`)));
  });
  return { child, log };
}

// Starts sockjs-gateway on `listen` (default 127.0.0.1:0) and resolves with
// { port, metricsPort, child, log } once it logged `listening on
// http://127.0.0.1:PORT` (metricsPort: from `metrics on ...`, if --metrics).
function startGateway(bin, extraArgs, logPath, listen = '127.0.0.1:0') {
  if (!fs.existsSync(bin)) throw new Error(`gateway binary not found at ${bin}`);
  const args = ['--listen', listen, ...extraArgs];
  const child = spawn(bin, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  started.push({ name: 'sockjs-gateway', child });
  const log = { lines: [], file: logPath ? fs.createWriteStream(logPath) : null };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`sockjs-gateway did not log "listening on" within 30 s:\n${log.lines.join('\n')}`));
    }, 30000);
    let found = false;
    let port = null;
    let metricsPort = null;
    const wantsMetrics = args.includes('--metrics');
    const onLine = (line) => {
      const metrics = /metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(line);
      if (metrics) metricsPort = Number(metrics[1]);
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(line);
      if (m) port = Number(m[1]);
      if (port && (metricsPort || !wantsMetrics) && !found) {
        found = true;
        clearTimeout(timer);
        resolve({ port, metricsPort, child, log, args });
      }
    };
    drain(child.stderr, log, onLine);
    drain(child.stdout, log, onLine);
    child.on('error', (e) => { clearTimeout(timer); reject(new Error(`cannot start sockjs-gateway: ${e.message}`)); });
    child.on('exit', (code, signal) => {
      child.exited = { code, signal };
      if (!found) {
        clearTimeout(timer);
        reject(new Error(`sockjs-gateway exited (${code ?? signal}) before listening:\n${log.lines.join('\n')}`));
      }
    });
  });
}

// n distinct ports that were free a moment ago (for nginx, which cannot
// report the ports it picked). All n listeners are held open together, so
// the kernel cannot hand the same port out twice.
async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      await new Promise((resolve, reject) => {
        s.once('error', reject);
        s.listen(0, '127.0.0.1', resolve);
      });
      servers.push(s);
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(() => r()))));
  }
}

// Resolves once something accepts TCP connections on the port; polls with
// a bound, and gives up at once if `child` exited.
function waitForPort(port, timeoutMs, child, what) {
  const until = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      if (child && child.exited) {
        reject(new Error(`${what} exited (${child.exited.code ?? child.exited.signal}) before listening on ${port}`));
        return;
      }
      const sock = net.connect({ host: '127.0.0.1', port });
      sock.once('connect', () => { sock.destroy(); resolve(); });
      sock.once('error', () => {
        sock.destroy();
        if (Date.now() > until) reject(new Error(`${what}: nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

// Static server for the test page, on its own origin (another port).
function startPageServer(files) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const file = files[url.pathname];
    if (!file || req.method !== 'GET') {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found');
      return;
    }
    const type = file.endsWith('.html') ? 'text/html; charset=utf-8'
      : file.endsWith('.js') ? 'application/javascript; charset=utf-8' : 'application/octet-stream';
    res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      closers.push(() => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }));
      resolve({ port: server.address().port, server });
    });
  });
}

// nginx in the foreground, single process (master_process off), with its
// config, pid file, logs and temp paths all in `dir`.
async function startNginx(bin, dir, servers) {
  const prefix = dir.replace(/\/?$/, '/');
  for (const d of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi', 'logs']) {
    fs.mkdirSync(path.join(dir, d), { recursive: true });
  }
  const conf = `# generated by client-js/lib/procs.js for one browser-test run
daemon off;
master_process off;
worker_processes 1;
pid ${prefix}nginx.pid;
error_log ${prefix}logs/error.log info;
events { worker_connections 512; }
http {
  log_format t '$msec $server_port $request_method "$request_uri" $status up=$upstream_status upgrade="$http_upgrade" $body_bytes_sent $request_time';
  access_log ${prefix}logs/access.log t;
  client_body_temp_path ${prefix}client_body;
  proxy_temp_path ${prefix}proxy;
  fastcgi_temp_path ${prefix}fastcgi;
  uwsgi_temp_path ${prefix}uwsgi;
  scgi_temp_path ${prefix}scgi;
  types { text/html html; application/javascript js; }
  default_type application/octet-stream;
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
${servers.join('\n')}
}
`;
  const confPath = path.join(dir, 'nginx.conf');
  fs.writeFileSync(confPath, conf);
  const { child, log } = await spawnServer('nginx', bin, ['-e', path.join(dir, 'logs/error.log'), '-c', confPath, '-p', prefix]);
  return { child, confPath, dir, log };
}

// Debian's squid as a corporate LAN's forward proxy, in the foreground
// (-N), with its config, logs, pid file and memory-only cache in `dir`:
// CONNECT only to 443 (so no WebSocket through it), caching as shipped.
// Resolves with { port, child, accessLog } once it accepts connections.
async function startSquid(bin, dir) {
  const [port] = await freePorts(1);
  fs.mkdirSync(dir, { recursive: true });
  // Started as root, squid works as the `proxy` user: it must write here.
  fs.chmodSync(dir, 0o777);
  const accessLog = path.join(dir, 'access.log');
  const conf = `# generated by client-js/lib/procs.js for one browser-test run
http_port 127.0.0.1:${port}
acl localnet src 127.0.0.0/8
acl SSL_ports port 443
acl Safe_ports port 80 443 1025-65535
acl CONNECT method CONNECT
http_access deny !Safe_ports
http_access deny CONNECT !SSL_ports
http_access allow localnet
http_access deny all
cache_mem 16 MB
maximum_object_size_in_memory 512 KB
pid_filename ${dir}/squid.pid
cache_log ${dir}/cache.log
access_log stdio:${accessLog}
logformat squid %ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %un %Sh/%<a %mt
pinger_enable off
shutdown_lifetime 1 seconds
coredump_dir ${dir}
`;
  const confPath = path.join(dir, 'squid.conf');
  fs.writeFileSync(confPath, conf);
  const { child, log } = await spawnServer('squid', bin, ['-N', '-f', confPath], { hint: 'apt-get install -y squid' });
  try {
    await waitForPort(port, 20000, child, 'squid');
  } catch (e) {
    const cacheLog = fs.existsSync(path.join(dir, 'cache.log')) ? fs.readFileSync(path.join(dir, 'cache.log'), 'utf8') : '';
    throw new Error(`${e.message}\nsquid output:\n${log.lines.join('\n')}\ncache.log:\n${cacheLog.slice(-2000)}`);
  }
  return { port, child, accessLog, confPath };
}

// redis-server on a free loopback port, no persistence; resolves with
// { port, child, url } once it answers PING.
async function startRedis(bin) {
  const [port] = await freePorts(1);
  const { child, log } = await spawnServer('redis-server', bin,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { hint: 'apt-get install -y redis-server' });
  const until = Date.now() + 10000;
  for (;;) {
    try {
      if (await redisCommand(port, ['PING']) === 'PONG') break;
    } catch (e) {
      if (child.exited || Date.now() > until) {
        throw new Error(`redis-server did not answer PING on ${port} within 10 s: ${e.message}\n${log.lines.join('\n')}`);
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { port, child, url: `redis://127.0.0.1:${port}` };
}

// RabbitMQ of our own, from Debian's rabbitmq-server, with the Web-STOMP
// plugin: everything (database, logs, config, cookie, pid file) in `dir`,
// its own node name, every listener on 127.0.0.1 (AMQP, STOMP, Web-STOMP,
// the Erlang distribution port) and its own epmd on a free port, so
// nothing depends on a system broker. `ports` from an earlier start
// restarts it on the same ports (and the same database). Resolves with
// { ports, child, epmd, url, user, pass, stop } once the Web-STOMP port
// answers a STOMP CONNECT with those credentials over WebSocket.
const RABBITMQ_SERVER = '/usr/lib/rabbitmq/bin/rabbitmq-server';

async function startRabbitmq(dir, ports = null, startTimeoutMs = 60000) {
  if (!fs.existsSync(RABBITMQ_SERVER)) throw new Error(`${RABBITMQ_SERVER} not found (apt-get install -y rabbitmq-server)`);
  if (!ports) {
    const [amqp, stomp, webStomp, dist, epmd] = await freePorts(5);
    ports = { amqp, stomp, webStomp, dist, epmd };
  }
  const user = 'stomp-test';
  const pass = 'stomp-secret-1';
  for (const d of ['mnesia', 'log', 'home']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  const conf = path.join(dir, 'rabbitmq.conf');
  fs.writeFileSync(conf, `# generated by client-js/lib/procs.js for one browser-test run
listeners.tcp.1 = 127.0.0.1:${ports.amqp}
stomp.listeners.tcp.1 = 127.0.0.1:${ports.stomp}
web_stomp.tcp.port = ${ports.webStomp}
web_stomp.tcp.ip = 127.0.0.1
default_user = ${user}
default_pass = ${pass}
loopback_users = none
log.console = false
log.file.level = info
`);
  // Offline: the file the rabbitmq-plugins command would write.
  fs.writeFileSync(path.join(dir, 'enabled_plugins'), '[rabbitmq_web_stomp].\n');
  fs.writeFileSync(path.join(dir, 'rabbitmq-env.conf'), '');
  const env = {
    PATH: process.env.PATH,
    HOME: path.join(dir, 'home'),
    RABBITMQ_NODENAME: `stomp-test-${ports.epmd}@localhost`,
    RABBITMQ_CONFIG_FILE: conf,
    RABBITMQ_ADVANCED_CONFIG_FILE: path.join(dir, 'advanced.config'),
    RABBITMQ_CONF_ENV_FILE: path.join(dir, 'rabbitmq-env.conf'),
    RABBITMQ_ENABLED_PLUGINS_FILE: path.join(dir, 'enabled_plugins'),
    RABBITMQ_MNESIA_BASE: path.join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: path.join(dir, 'log'),
    RABBITMQ_PID_FILE: path.join(dir, 'rabbitmq.pid'),
    RABBITMQ_DIST_PORT: String(ports.dist),
    ERL_EPMD_ADDRESS: '127.0.0.1',
    ERL_EPMD_PORT: String(ports.epmd),
    // With input allowed the script execs erl, so our child is the beam
    // process itself (not a shell around it); -noinput keeps stdin unread.
    RABBITMQ_ALLOW_INPUT: '1',
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-noinput -kernel inet_dist_use_interface {127,0,0,1}',
  };
  // Our own epmd in the foreground, so it is ours to stop by PID (one the
  // VM started itself would daemonize).
  const { child: epmd } = await spawnServer('epmd', 'epmd', ['-address', '127.0.0.1', '-port', String(ports.epmd)], { env });
  await waitForPort(ports.epmd, 10000, epmd, 'epmd');

  const { child, log } = await spawnServer('rabbitmq-server', RABBITMQ_SERVER, [], {
    env, logFile: fs.createWriteStream(path.join(dir, 'log', 'console.log'), { flags: 'a' }),
  });
  const url = `ws://127.0.0.1:${ports.webStomp}/ws`;
  const until = Date.now() + startTimeoutMs;
  let last = null;
  for (;;) {
    if (child.exited) {
      throw new Error(`rabbitmq-server exited (${child.exited.code ?? child.exited.signal}) before Web-STOMP answered:\n${log.lines.join('\n')}`);
    }
    try {
      const frame = await stompOverWebSocket(ports.webStomp, user, pass);
      if (frame.startsWith('CONNECTED')) break;
      last = `answered ${JSON.stringify(frame.slice(0, 80))}`;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > until) {
      throw new Error(`RabbitMQ's Web-STOMP on ${url} did not answer a STOMP CONNECT within ${startTimeoutMs} ms (last: ${last}):\n${log.lines.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const stop = async () => {
    for (const [name, proc] of [['rabbitmq-server', child], ['epmd', epmd]]) {
      if (proc.exited) continue;
      const gone = new Promise((r) => proc.once('exit', r));
      process.kill(proc.pid, 'SIGTERM');
      const t = deadline(30000, `${name} (pid ${proc.pid}) stopping`);
      try {
        await Promise.race([gone, t]);
      } catch (e) {
        process.kill(proc.pid, 'SIGKILL');
        await gone;
      } finally {
        t.cancel();
      }
    }
  };
  return { ports, child, epmd, url, user, pass, dir, log, stop };
}

// One STOMP CONNECT over a WebSocket (subprotocol v12.stomp) to
// 127.0.0.1:port/ws; resolves with the first frame the broker answers.
// Enough WebSocket for that: a masked text frame out, one frame in.
function stompOverWebSocket(port, login, passcode, timeoutMs = 3000) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    let upgraded = false;
    const timer = setTimeout(() => done(reject, new Error(`no STOMP answer within ${timeoutMs} ms`)), timeoutMs);
    function done(f, v) { clearTimeout(timer); sock.destroy(); f(v); }
    sock.on('error', (e) => done(reject, e));
    sock.on('close', () => done(reject, new Error('connection closed')));
    sock.on('connect', () => {
      sock.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n`);
    });
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buf.slice(0, end).toString('latin1');
        if (!/^HTTP\/1\.1 101/.test(head)) return done(reject, new Error(`handshake answered ${head.split('\r\n')[0]}`));
        upgraded = true;
        buf = buf.slice(end + 4);
        const payload = Buffer.from(`CONNECT\naccept-version:1.2\nhost:/\nlogin:${login}\npasscode:${passcode}\n\n\0`);
        const mask = Buffer.from([1, 2, 3, 4]);
        const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
        sock.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]));
      }
      if (buf.length < 2) return;
      let len = buf[1] & 0x7f;
      let at = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); at = 4; }
      if (buf.length < at + len) return;
      done(resolve, buf.slice(at, at + len).toString('utf8'));
    });
  });
}

// One Redis command over RESP; resolves with a simple string, integer or
// bulk string reply (null for a nil), rejects on an error reply.
function redisCommand(port, args) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('redis: no reply within 2 s')); }, 2000);
    const done = (f, v) => { clearTimeout(timer); sock.destroy(); f(v); };
    sock.on('error', (e) => done(reject, e));
    sock.on('connect', () => {
      sock.write(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join(''));
    });
    sock.setEncoding('utf8');
    sock.on('data', (chunk) => {
      buf += chunk;
      const eol = buf.indexOf('\r\n');
      if (eol === -1) return;
      const head = buf.slice(0, eol);
      if (head[0] === '+') done(resolve, head.slice(1));
      else if (head[0] === ':') done(resolve, Number(head.slice(1)));
      else if (head[0] === '-') done(reject, new Error(`redis: ${head.slice(1)}`));
      else if (head === '$-1') done(resolve, null);
      else if (head[0] === '$') {
        const len = Number(head.slice(1));
        const body = buf.slice(eol + 2);
        if (Buffer.byteLength(body) >= len + 2) done(resolve, body.slice(0, len));
      } else done(reject, new Error(`redis: unexpected reply ${head}`));
    });
  });
}

// Reads one gauge or counter from a gateway's /metrics: the sum of the
// samples of `name` whose labels include every pair in `labels`.
function scrapeMetric(port, name, labels) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/metrics', timeout: 5000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        let sum = 0;
        for (const line of text.split('\n')) {
          const m = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
          if (!m || m[1] !== name) continue;
          const have = m[2] || '';
          if (Object.entries(labels).every(([k, v]) => have.includes(`${k}="${v}"`))) sum += Number(m[3]);
        }
        resolve(sum);
      });
    });
    req.on('timeout', () => req.destroy(new Error('metrics: timed out')));
    req.on('error', reject);
  });
}

async function stopAll() {
  for (const close of closers.splice(0)) {
    try { await close(); } catch (e) { /* ignore */ }
  }
  for (const { name, child } of started.splice(0).reverse()) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    const gone = new Promise((r) => child.once('exit', r));
    try { process.kill(child.pid, 'SIGTERM'); } catch (e) { continue; }
    const t = deadline(5000, `${name} (pid ${child.pid}) stopping`);
    try {
      await Promise.race([gone, t]);
    } catch (e) {
      try { process.kill(child.pid, 'SIGKILL'); } catch (e2) { /* gone */ }
    } finally {
      t.cancel();
    }
  }
}

// Last resort when the process is exiting synchronously.
function killAllNow() {
  for (const { child } of started) {
    if (child.exitCode === null && child.signalCode === null) {
      try { process.kill(child.pid, 'SIGKILL'); } catch (e) { /* gone */ }
    }
  }
}

module.exports = { startGateway, startSquid, startRedis, startRabbitmq, redisCommand, scrapeMetric, startNginx, startPageServer, freePorts, waitForPort, stopAll, killAllNow, deadline };
