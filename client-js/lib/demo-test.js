'use strict';
// Clicks through the demo page that the gateway serves at `GET /`
// (src/bin/sockjs-gateway/demo.html) like a person would, and saves a
// screenshot. With fromFile set, the file is written into the document
// that `GET /` on the gateway gave (so it runs on the gateway's origin, and
// /lib/sockjs.min.js and all SockJS traffic still go to the gateway): for
// trying the page before the gateway serves it.

const fs = require('fs');

const path = require('path');

const DEMO_FILE = path.resolve(__dirname, '../../src/bin/sockjs-gateway/demo.html');
const IDS = ['service', 'transport', 'connect', 'disconnect', 'message', 'send', 'log', 'status'];

async function runDemo({ context, gwPort, fromFile, screenshot, verbose }) {
  const origin = `http://127.0.0.1:${gwPort}`;
  const results = [];
  const page = await context.newPage();
  const dialogs = [];
  const pageErrors = [];
  const foreign = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => pageErrors.push(String(e && e.message || e)));
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(origin + '/') && !u.startsWith('data:') && !u.startsWith('about:')) foreign.push(u);
  });
  if (verbose) page.on('console', (m) => console.log(`    [demo console ${m.type()}] ${m.text()}`));

  function record(check, r) {
    if (dialogs.length) {
      r.ok = false;
      r.reason = `SCRIPT INJECTION: dialog opened: ${dialogs.join(' | ')}` + (r.reason ? `; ${r.reason}` : '');
      dialogs.length = 0;
    }
    results.push({ check, transport: null, openMs: null, echoMs: null, detail: '', reason: '', ...r });
  }

  async function step(check, fn) {
    try {
      record(check, { ok: true, ...(await fn()) });
      return true;
    } catch (e) {
      record(check, { ok: false, reason: e.message.split('\n')[0] });
      return false;
    }
  }

  const statusState = () => page.getAttribute('#status', 'data-state');

  async function waitState(states, timeout) {
    await page.waitForFunction((s) => s.includes(document.getElementById('status').dataset.state),
      states, { timeout }).catch(async () => {
      throw new Error(`#status stayed "${await page.textContent('#status')}" (${await statusState()}), ` +
        `expected ${states.join('/')} within ${timeout} ms; last log line: ${await lastLog()}`);
    });
  }

  async function lastLog() {
    return page.evaluate(() => {
      const li = document.querySelector('#log li:last-child');
      return li ? li.textContent : '(empty log)';
    });
  }

  async function connect(service, transport) {
    if (!(await page.isDisabled('#connect'))) {
      // fine: not connected
    } else {
      await page.click('#disconnect');
      await waitState(['closed', 'idle', 'error'], 5000);
    }
    await page.selectOption('#service', service);
    await page.selectOption('#transport', transport);
    await page.click('#connect');
  }

  async function openOn(service, transport, expectTransport) {
    await connect(service, transport);
    await waitState(['open'], 15000);
    const used = await page.getAttribute('#status', 'data-transport');
    const openMs = Number(await page.getAttribute('#status', 'data-open-ms'));
    const shownText = await page.textContent('#status');
    if (expectTransport && used !== expectTransport) throw new Error(`connected via ${used}, expected ${expectTransport}`);
    if (!shownText.includes(used)) throw new Error(`#status "${shownText}" does not show the transport ${used}`);
    return { used, openMs };
  }

  // Types text (with Enter, or a click on Send) and waits for the reply
  // entry the page matches to it; returns that entry's data.
  async function sendAndWait(text, { viaEnter = true, match = (li, t) => li.message === t } = {}) {
    const before = await page.$$eval('#log li', (lis) => lis.length);
    await page.fill('#message', text);
    if (viaEnter) await page.press('#message', 'Enter'); else await page.click('#send');
    const handle = await page.waitForFunction(({ before, text, matchSrc }) => {
      const match = new Function('li', 't', `return (${matchSrc})(li, t);`);
      const lis = Array.from(document.querySelectorAll('#log li')).slice(before);
      for (const li of lis) {
        const d = { kind: li.dataset.kind, message: li.dataset.message, rtt: li.dataset.rtt, transport: li.dataset.transport, length: li.dataset.length, text: li.querySelector('.text').textContent };
        if (d.kind === 'echo' && match(d, text)) return d;
      }
      return null;
    }, { before, text, matchSrc: match.toString() }, { timeout: 10000 }).catch(async () => {
      throw new Error(`no reply entry for ${JSON.stringify(text.slice(0, 40))} within 10 s; last log line: ${await lastLog()}`);
    });
    const d = await handle.jsonValue();
    if (d.rtt == null || !(Number(d.rtt) >= 0)) throw new Error(`reply entry shows no round-trip time: ${JSON.stringify(d)}`);
    const rttShown = await page.evaluate(() => {
      const lis = document.querySelectorAll('#log li[data-kind=echo]');
      const rtt = lis[lis.length - 1].querySelector('.rtt');
      return rtt ? rtt.textContent : '';
    });
    if (!/\d+(\.\d)? ms/.test(rttShown)) throw new Error(`round-trip time not shown (got "${rttShown}")`);
    return d;
  }

  try {
    // ---- 1. the page itself
    let ok = await step('page-load', async () => {
      let ct;
      if (fromFile) {
        // Writes the file into a document the gateway served (its /echo
        // greeting), so the page runs on the gateway's origin as if served there.
        await page.goto(`${origin}/echo`, { waitUntil: 'load', timeout: 15000 });
        await page.setContent(fs.readFileSync(fromFile, 'utf8'), { waitUntil: 'load', timeout: 15000 });
        ct = `file ${fromFile} written into ${origin}/echo`;
      } else {
        const resp = await page.goto(`${origin}/`, { waitUntil: 'load', timeout: 15000 }).catch((e) => {
          throw new Error(`GET ${origin}/ failed to load (${e.message.split('\n')[0]}): does the gateway serve demo.html at / yet?`);
        });
        if (!resp) throw new Error('no response for GET /');
        ct = resp.headers()['content-type'] || '';
        if (resp.status() !== 200) {
          throw new Error(`GET ${origin}/ answered ${resp.status()}${resp.status() === 404 ? ' (the gateway does not serve demo.html at / yet)' : ''}`);
        }
        if (!/^text\/html/i.test(ct)) throw new Error(`GET / has Content-Type "${ct}", expected text/html`);
        const body = await resp.text();
        const file = fs.readFileSync(DEMO_FILE, 'utf8');
        if (body !== file) throw new Error(`GET / is not ${DEMO_FILE} (${body.length} bytes vs ${file.length})`);
      }
      for (const id of IDS) {
        if (!(await page.$(`#${id}`))) throw new Error(`the page has no #${id}`);
      }
      const version = await page.evaluate(() => window.SockJS && window.SockJS.version);
      if (version !== '1.6.1') throw new Error(`window.SockJS.version is ${version}: /lib/sockjs.min.js did not load`);
      const scripts = await page.$$eval('script[src]', (s) => s.map((x) => x.getAttribute('src')));
      if (JSON.stringify(scripts) !== '["/lib/sockjs.min.js"]') throw new Error(`external scripts ${JSON.stringify(scripts)}, expected only /lib/sockjs.min.js`);
      const external = await page.$$eval('link[href], img[src], iframe[src]', (els) => els.map((e) => e.outerHTML));
      if (external.length) throw new Error(`the page loads other resources: ${external[0]}`);
      if (foreign.length) throw new Error(`requests to other origins: ${foreign[0]}`);
      if (pageErrors.length) throw new Error(`page error: ${pageErrors[0]}`);
      return { detail: `${fromFile ? 'from the file, not the gateway' : 'served by the gateway, same bytes as demo.html'}, ${ct}, sockjs-client ${version}` };
    });
    if (!ok) return results;

    // ---- 2. echo with automatic choice, by keyboard and by button
    await step('echo auto', async () => {
      const { used, openMs } = await openOn('/echo', 'auto', 'websocket');
      const hostile = 'Hello from the demo test <img src=x onerror="alert(1)"></script><script>alert(2)</script> \u{1F600}';
      const d1 = await sendAndWait(hostile, { viaEnter: true });
      if (!d1.text.includes('<img src=x')) throw new Error(`the log does not show the message as text: ${d1.text}`);
      if (d1.transport !== used) throw new Error(`the reply entry shows transport ${d1.transport}, expected ${used}`);
      const d2 = await sendAndWait('second message, sent with the button', { viaEnter: false });
      const injected = await page.evaluate(() => document.querySelectorAll('#log img, #log script').length);
      if (injected) throw new Error('the log contains elements built from message text');
      await page.click('#disconnect');
      await waitState(['closed'], 5000);
      const code = await page.getAttribute('#status', 'data-code');
      if (code !== '1000') throw new Error(`after Disconnect the status shows code ${code}, expected 1000`);
      return { transport: used, openMs, echoMs: Math.round(Number(d1.rtt)), detail: `2 echoes with RTT shown (${Number(d1.rtt).toFixed(1)}, ${Number(d2.rtt).toFixed(1)} ms), Disconnect -> 1000` };
    });

    // ---- 3. every transport in the page's own list, on /echo
    const options = await page.$$eval('#transport option', (os) => os.map((o) => o.value).filter((v) => v !== 'auto'));
    for (const t of options) {
      await step(`echo ${t}`, async () => {
        const { used, openMs } = await openOn('/echo', t, t);
        const d = await sendAndWait(`via ${t}: caf\u00e9 \u2028 </script>`);
        await page.click('#disconnect');
        await waitState(['closed'], 5000);
        return { transport: used, openMs, echoMs: Math.round(Number(d.rtt)), detail: 'echo shown with RTT and transport' };
      });
    }

    // ---- 4. the other services
    await step('broadcast', async () => {
      const { used, openMs } = await openOn('/broadcast', 'xhr-polling', 'xhr-polling');
      const d = await sendAndWait(`hello everyone ${Date.now()}`);
      return { transport: used, openMs, echoMs: Math.round(Number(d.rtt)), detail: 'own broadcast shown with RTT' };
    });
    await step('amplify', async () => {
      const { used, openMs } = await openOn('/amplify', 'jsonp-polling', 'jsonp-polling');
      const d = await sendAndWait('10', { match: (li) => li.length === '1024' });
      return { transport: used, openMs, echoMs: Math.round(Number(d.rtt)), detail: `reply of ${d.length} chars shown as "${d.text.slice(0, 30)}"` };
    });
    await step('ticker', async () => {
      const { used, openMs } = await openOn('/ticker', 'eventsource', 'eventsource');
      if (!(await page.isDisabled('#message'))) throw new Error('the message box is enabled on /ticker');
      await page.waitForFunction(() => document.querySelectorAll('#log li[data-kind=recv][data-message="tick!"]').length >= 2, null, { timeout: 5000 })
        .catch(() => { throw new Error('fewer than 2 tick! entries within 5 s'); });
      return { transport: used, openMs, detail: 'two tick! entries shown' };
    });
    await step('close', async () => {
      await connect('/close', 'iframe-htmlfile');
      await waitState(['closed'], 15000);
      const code = await page.getAttribute('#status', 'data-code');
      const reason = await page.getAttribute('#status', 'data-reason');
      if (code !== '3000' || reason !== 'Go away!') throw new Error(`status shows ${code} "${reason}", expected 3000 "Go away!"`);
      const opened = await page.evaluate(() => Array.from(document.querySelectorAll('#log li')).some((li) => /open via iframe-htmlfile/.test(li.textContent)));
      if (!opened) throw new Error('the log never showed the session open via iframe-htmlfile');
      return { transport: 'iframe-htmlfile', detail: 'status shows 3000 "Go away!"' };
    });

    // ---- 5. a pleasant state for the screenshot
    await step('screenshot', async () => {
      await page.click('#clear');
      const { used, openMs } = await openOn('/echo', 'auto', 'websocket');
      for (const m of ['Hello, SockJS!', 'caf\u00e9, na\u00efve, \u00fcber \u2713 \u2192 \u00bd', '<b>markup stays text</b>']) await sendAndWait(m);
      await page.fill('#message', 'Type here, press Enter');
      await page.screenshot({ path: screenshot, fullPage: true });
      const size = fs.statSync(screenshot).size;
      if (size < 5000) throw new Error(`screenshot is only ${size} bytes`);
      if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join(' | ')}`);
      return { transport: used, openMs, detail: `saved ${screenshot} (${size} bytes)` };
    });
  } finally {
    await page.close().catch(() => {});
  }
  return results;
}

module.exports = { runDemo };
