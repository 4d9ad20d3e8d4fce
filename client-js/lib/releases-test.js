'use strict';
// The client-release matrix: every sockjs-client release from 1.0.0 to
// 1.6.0, each loaded by a test page from the page's own server, against a
// gateway started with no flags. 1.6.1 is the main matrix's.
//
// The page's bundle comes from the release's npm package (1.1.2 on), or,
// for 1.0.0 to 1.1.1, whose npm packages ship no dist/, from the copy the
// gateway carries (taken from the release's git tag; assets/sockjs-client/
// SOURCES.md). The npm bundles must equal the gateway's copies byte for byte.
//
// FULL_RELEASES run every transport the release offers in Chromium; the
// others (RELEASE_MATRIX=small) run the iframe transports, xhr-streaming and
// default negotiation.
// Every run: echo-batch and server-close. Then a page speaking a release
// the gateway does not carry: its iframe transports must fail with the
// client's own version error, and the gateway must log the version once.

const fs = require('fs');
const path = require('path');

const HERE = path.resolve(__dirname, '..');
const ASSETS = path.resolve(HERE, '../assets/sockjs-client');

const RELEASES = [
  '1.0.0', '1.0.1', '1.0.2', '1.0.3', '1.1.0', '1.1.1', '1.1.2', '1.1.4', '1.1.5',
  '1.2.0', '1.3.0', '1.4.0', '1.5.0', '1.5.1', '1.5.2', '1.6.0',
];
// Every release runs every transport (about 2 minutes); RELEASE_MATRIX=small
// keeps that for three and runs the small matrix for the rest (80 s).
const FULL_RELEASES = new Set(process.env.RELEASE_MATRIX === 'small' ? ['1.0.0', '1.1.5', '1.3.0'] : RELEASES);
const FULL_TRANSPORTS = [
  'websocket', 'xhr-streaming', 'xhr-polling', 'eventsource',
  'iframe-eventsource', 'iframe-htmlfile', 'iframe-xhr-polling', 'jsonp-polling',
];
const SMALL_TRANSPORTS = ['iframe-eventsource', 'iframe-htmlfile', 'iframe-xhr-polling', 'xhr-streaming'];
const CHECKS = [['echo-batch', 'echoBatch', '/echo'], ['server-close', 'serverClose', '/close']];
const NOT_CARRIED = '1.7.0';

function bundleOf(version) {
  const npm = path.join(HERE, `node_modules/sockjs-client-${version}/dist/sockjs.min.js`);
  const carried = path.join(ASSETS, `sockjs-${version}.min.js`);
  if (!fs.existsSync(npm)) return { file: carried, from: 'the git tag (gateway copy)' };
  if (!fs.readFileSync(npm).equals(fs.readFileSync(carried))) {
    throw new Error(`${npm} differs from the gateway's ${carried}`);
  }
  return { file: npm, from: `npm sockjs-client@${version}` };
}

// Page-server routes: /releases/V/{harness.html,harness.js,sockjs.min.js},
// plus a bundle claiming a release the gateway does not carry (1.6.1's
// with its version string replaced, as a fork would).
function pageFiles(pageDir, tmpDir) {
  const files = {};
  const sources = {};
  const add = (version, bundle) => {
    files[`/releases/${version}/harness.html`] = path.join(pageDir, 'harness.html');
    files[`/releases/${version}/harness.js`] = path.join(pageDir, 'harness.js');
    files[`/releases/${version}/sockjs.min.js`] = bundle;
  };
  for (const v of RELEASES) {
    const b = bundleOf(v);
    add(v, b.file);
    sources[v] = b.from;
  }
  const latest = fs.readFileSync(path.join(ASSETS, 'sockjs-1.6.1.min.js'), 'utf8');
  if (latest.split('"1.6.1"').length !== 2) throw new Error('1.6.1 bundle: expected its version string once');
  const fork = path.join(tmpDir, `sockjs-${NOT_CARRIED}.min.js`);
  fs.writeFileSync(fork, latest.replace('"1.6.1"', `"${NOT_CARRIED}"`));
  add(NOT_CARRIED, fork);
  return { files, sources };
}

async function runReleases(t) {
  const { context, runInPage, report, section, pageOrigin, gw, sameOriginLoader, sources } = t;
  const gwOrigin = `http://127.0.0.1:${gw.port}`;
  section(`client releases: ${RELEASES.length} releases, page ${pageOrigin}, gateway ${gwOrigin} (no flags); ` +
    (FULL_RELEASES.size === RELEASES.length ? 'every transport for each' : `full matrix for ${[...FULL_RELEASES].join(', ')}`));

  for (const version of RELEASES) {
    const harness = `${pageOrigin}/releases/${version}/harness.html`;
    const env = await pageEnvironment(context, harness);
    if (env.sockjsVersion !== version) {
      report(`release ${version}`, 'SockJS.version', { ok: false, reason: `the page's bundle reports ${env.sockjsVersion}` });
      continue;
    }
    console.log(`sockjs-client ${version}: SockJS.version=${env.sockjsVersion}, bundle from ${sources[version]}`);
    const full = FULL_RELEASES.has(version);
    const configs = (full ? FULL_TRANSPORTS : SMALL_TRANSPORTS).map((tr) => ({ label: tr, transports: [tr], expect: tr, pageUrl: harness }));
    if (full) {
      configs.push({
        label: 'htmlfile (same-origin page)', transports: ['htmlfile'], expect: 'htmlfile', pageUrl: null,
        loader: sameOriginLoader(gwOrigin, t.pageFiles[`/releases/${version}/sockjs.min.js`]),
      });
    }
    configs.push({ label: 'default negotiation', transports: null, expect: 'websocket', pageUrl: harness });
    for (const c of configs) {
      for (const [check, fn, prefix] of CHECKS) {
        const options = c.transports ? { timeout: 5000 } : undefined;
        const r = await runInPage(c.pageUrl, fn, { url: gwOrigin + prefix, transports: c.transports, expect: c.expect, options }, c.loader);
        if (r.ok && r.sockjsVersion && r.sockjsVersion !== version) {
          r.ok = false;
          r.reason = `ran sockjs-client ${r.sockjsVersion}`;
        }
        report(`release ${version}/${c.label}`, check, r);
      }
    }
  }
  await notCarried(t, gwOrigin);
}

async function pageEnvironment(context, url) {
  const page = await context.newPage();
  try {
    await page.goto(url, { waitUntil: 'load', timeout: 15000 });
    return await page.evaluate(() => window.sockjsTests.environment());
  } finally {
    await page.close().catch(() => {});
  }
}

// A page speaking a release the gateway does not carry: the iframe loader
// asks for /lib/sockjs-1.7.0.min.js, gets 404, runs 1.6.1, and the client
// refuses that iframe itself; the transport fails as it would against any
// server whose iframe runs another release. The gateway logs the version.
async function notCarried(t, gwOrigin) {
  const { runInPage, report, pageOrigin, logFile } = t;
  const harness = `${pageOrigin}/releases/${NOT_CARRIED}/harness.html`;
  for (const tr of ['iframe-xhr-polling', 'iframe-eventsource']) {
    const r = await runInPage(harness, 'echoBatch', {
      url: `${gwOrigin}/echo`, transports: [tr], expect: tr, options: { timeout: 3000 }, openTimeout: 20000,
    });
    const refused = !r.ok && /closed before open: code (1006|2000)/.test(r.reason);
    report(`release ${NOT_CARRIED} (not carried)/${tr}`, 'refused by client', refused
      ? { ok: true, transport: null, detail: `the client gave up as expected: ${r.reason.slice(0, 120)}` }
      : { ok: false, transport: r.transport, reason: `expected the client to refuse the iframe, got: ${r.ok ? 'open on ' + r.transport : r.reason}` });
  }
  const log = fs.readFileSync(logFile, 'utf8');
  const lines = log.split('\n').filter((l) => l.includes(`a page asked for sockjs-client "${NOT_CARRIED}"`));
  report(`release ${NOT_CARRIED} (not carried)`, 'gateway log', lines.length === 1 && / INFO /.test(lines[0])
    ? { ok: true, detail: `logged once at info: ${lines[0].replace(/^.*INFO\s+\S+\]?\s*/, '').slice(0, 140)}` }
    : { ok: false, reason: `expected one info line naming ${NOT_CARRIED} in ${logFile}, found ${lines.length}: ${lines.join(' | ').slice(0, 300)}` });
}

module.exports = { runReleases, pageFiles, RELEASES };
