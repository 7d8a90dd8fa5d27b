// Adding cameras from camhub's page, for tests/browser.rs: an operator makes a stream key and reads it from the
// one-time box (copied with its button too), the Rust side starts an FFmpeg RTMP publisher with it, and the page shows
// the pushed camera playing and its key "publishing rtmp"; a scan of the test camera's host (with credentials that must
// reach camhub percent-encoded) lists its stream, Add makes it a camera that plays; the key is revoked (after a
// cancelled first try) and its camera leaves the grid. The key and the scan's password must never reach the console,
// a URL, sessionStorage or localStorage, nor stay in the page once the box is closed. A viewer sees neither panel and
// the page never asks for the keys. Screenshots at 1280x800 and at a phone's width go to evidence/.
//
// The Rust test owns the processes: this script asks it with `@cmd publish-rtmp URL` and waits for `ok`; it ends with
// one line `@result {json}`. Everything else goes to stderr.
//
// Environment: CAMHUB_URL (http://127.0.0.1:PORT/), CAMHUB_TOKEN (an operator JWT), VIEWER_TOKEN (a viewer JWT),
// SCAN_HOST (the test camera's host:port), SCAN_USER, SCAN_PASSWORD, SCREENSHOT and SCREENSHOT_NARROW (PNG paths),
// FAILURE_SCREENSHOT (PNG path), CHROMIUM (default /usr/bin/chromium).

import readline from 'node:readline';
import { check, env, openBrowser, signIn, waitFor as poll } from './chromium.mjs';

const URL_ = env('CAMHUB_URL');
const TOKEN = env('CAMHUB_TOKEN');
const VIEWER_TOKEN = env('VIEWER_TOKEN');
const SCAN_HOST = env('SCAN_HOST');
const SCAN_USER = env('SCAN_USER');
const SCAN_PASSWORD = env('SCAN_PASSWORD');
const SCREENSHOT = env('SCREENSHOT');
const SCREENSHOT_NARROW = env('SCREENSHOT_NARROW');
const FAILURE_SCREENSHOT = env('FAILURE_SCREENSHOT');
/** The stream the test camera serves at a path discovery tries (`testcam --also-at /stream1`). */
const FOUND_URL = `rtsp://${SCAN_HOST}/stream1`;
/** A host with nothing listening: discovery must say so, readably. */
const DEAD_HOST = '127.0.0.1:1';

const log = (...a) => console.error('[sources]', ...a);

// ---- the Rust side ------------------------------------------------------------------------------------------------
const replies = [];
const waiters = [];
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (waiters.length) waiters.shift()(line);
  else replies.push(line);
});
async function ask(command) {
  process.stdout.write(`@cmd ${command}\n`);
  const reply = await new Promise((resolve) => (replies.length ? resolve(replies.shift()) : waiters.push(resolve)));
  if (reply !== 'ok') throw new Error(`${command.split(' ')[0]}: ${reply}`);
}

// ---- the browser --------------------------------------------------------------------------------------------------
const { page, problems, close } = await openBrowser({ token: TOKEN, log });
await page.setViewportSize({ width: 1280, height: 800 });
await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(URL_).origin });

// Everything the page writes to its console, loads and sends over its WebSocket, to look for secrets in.
const consoleTexts = [];
const requestUrls = [];
const framesSent = [];
page.on('console', (msg) => consoleTexts.push(msg.text()));
page.on('request', (req) => requestUrls.push(req.url()));
page.on('websocket', (ws) => ws.on('framesent', ({ payload }) => framesSent.push(String(payload))));

const waitFor = (what, fn, timeoutMs) => poll(page, what, fn, timeoutMs);
const tile = (device) => `article.camera[data-device="${device}"]`;
const keyRow = (device) => `#keys tr[data-device="${device}"]`;
const scanRow = `#scan-results tr[data-url="${FOUND_URL}"]`;
const text = async (selector) => ((await page.textContent(selector)) ?? '').trim();

/** Whether the tile shows moving video from the camera (a decoded frame, playing). */
const playing = (device) =>
  page.$eval(tile(device), (el) => ({
    badge: el.querySelector('.badge').textContent,
    playing: el.querySelector('.video-box').dataset.playing === 'true',
    width: el.querySelector('video').videoWidth,
    height: el.querySelector('video').videoHeight,
  })).catch(() => null);

/** Where `secret` can still be found in the page: its markup, its inputs, its storage, the selection. */
const traces = (secret) =>
  page.evaluate((s) => {
    const found = [];
    if (document.documentElement.outerHTML.includes(s)) found.push('markup');
    if ([...document.querySelectorAll('input')].some((i) => i.type !== 'password' && i.value.includes(s))) found.push('input');
    for (const [name, store] of [['sessionStorage', sessionStorage], ['localStorage', localStorage]]) {
      for (let i = 0; i < store.length; i++) {
        const key = store.key(i);
        if (key.includes(s) || (store.getItem(key) ?? '').includes(s)) found.push(name);
      }
    }
    if (String(window.getSelection()).includes(s)) found.push('selection');
    return found;
  }, secret);

const result = {};
const t0 = Date.now();
try {
  await signIn(page, URL_, TOKEN);
  check((await text('#role')) === 'operator', 'the page shows the operator role');
  await page.waitForSelector('#keys-panel', { state: 'visible', timeout: 5000 });
  await page.waitForSelector('#discovery-panel', { state: 'visible', timeout: 5000 });
  await page.waitForSelector('#no-keys', { state: 'visible', timeout: 5000 });

  // ---- a stream key, shown once --------------------------------------------------------------------------------
  await page.fill('#key-name', 'Drone 1');
  await page.click('#key-create');
  await page.waitForSelector('#key-secret', { state: 'visible', timeout: 10000 });
  const secret = await page.$$eval('#key-secret .secret-value', (els) => Object.fromEntries(els.map((e) => [e.dataset.field, e.textContent])));
  const KEY = secret.stream_key;
  check(/^sk_[0-9a-f]{64}$/.test(KEY ?? ''), 'the box shows a stream key');
  check(secret.rtmp_url?.startsWith('rtmp://') && secret.rtmp_url.endsWith(`/live/${KEY}`), 'the box shows the RTMP URL with the key');
  check(secret.srt_url?.startsWith('srt://') && secret.srt_url.includes(`streamid=${KEY}`), 'the box shows the SRT URL with the key');
  check(/\/whip\/drone-1$/.test(secret.whip_url ?? ''), `the box shows the WHIP URL: ${secret.whip_url}`);
  const box = await text('#key-secret');
  check(/shown once/i.test(box) && /will not show it again/.test(box), 'the box says the key is shown once');
  check((await text('#key-secret-title')).includes('drone-1'), 'the box names the camera');
  // Its copy button puts the URL on the clipboard.
  await page.click('#key-secret dd:has([data-field="rtmp_url"]) button.copy');
  await waitFor('the copy button to say so', async () => (await text('#key-secret dd:has([data-field="rtmp_url"]) button.copy')) === 'Copied', 3000);
  const clipboard = await page.evaluate(() => navigator.clipboard.readText());
  check(clipboard === secret.rtmp_url, 'Copy put the RTMP URL on the clipboard');
  await page.evaluate(() => navigator.clipboard.writeText(''));

  // The key's row and the camera's tile, before any publisher.
  await page.waitForSelector(keyRow('drone-1'), { timeout: 10000 });
  const prefix = (await text(`${keyRow('drone-1')} .key-prefix`)).replace(/…$/, '');
  check(prefix.length >= 6 && KEY.startsWith(prefix) && prefix.length < KEY.length, `the row shows the key's first characters: ${prefix}`);
  check((await text(`${keyRow('drone-1')} .key-state`)) === 'not publishing yet', 'the row says nobody publishes yet');
  check((await text(`${keyRow('drone-1')} .key-origin`)) === 'API', 'the row says the key was made through the API');
  await page.waitForSelector(tile('drone-1'), { timeout: 10000 });
  result.key_prefix = prefix;

  // Closed, the key is gone from the page.
  await page.click('#key-secret-done');
  await page.waitForSelector('#key-secret', { state: 'hidden' });
  const afterClose = await traces(KEY);
  check(afterClose.length === 0, `the key is still in the page after its box was closed: ${afterClose}`);

  // ---- the publisher -------------------------------------------------------------------------------------------
  const pushStarted = Date.now();
  await ask(`publish-rtmp ${secret.rtmp_url}`);
  result.push_playing_ms = await waitFor('the pushed camera playing', async () => {
    const p = await playing('drone-1');
    return p?.badge === 'CONNECTED' && p.playing && p.width === 320;
  }, 30000);
  await waitFor('the key row saying publishing rtmp', async () => (await text(`${keyRow('drone-1')} .key-state`)) === 'publishing rtmp', 15000);
  result.publishing_shown_ms = Date.now() - pushStarted;

  // ---- discovery -------------------------------------------------------------------------------------------------
  // The button and the elapsed time while the scan runs, as the page showed them.
  await page.evaluate(() => {
    window.scanStates = [];
    const button = document.getElementById('scan-button');
    const state = document.getElementById('scan-state');
    const note = () => window.scanStates.push({ disabled: button.disabled, text: state.textContent });
    new MutationObserver(note).observe(state, { childList: true, characterData: true, subtree: true });
  });
  await page.fill('#scan-hosts', `${SCAN_HOST}, ${DEAD_HOST}`);
  await page.fill('#scan-username', SCAN_USER);
  await page.fill('#scan-password', SCAN_PASSWORD);
  await page.selectOption('#scan-timeout', '3000');
  const scanStarted = Date.now();
  await page.click('#scan-button');
  await page.waitForSelector(scanRow, { timeout: 15000 });
  await waitFor('the scan to end', async () => !(await page.isDisabled('#scan-button')), 10000);
  result.scan_ms = Date.now() - scanStarted;
  const states = await page.evaluate(() => window.scanStates);
  check(states.some((s) => s.disabled && /^Scanning… \d+\.\d s$/.test(s.text)), `Scan disabled with the elapsed time while it ran: ${JSON.stringify(states.slice(0, 3))}`);
  result.scan_state = await text('#scan-state');
  check(/^Found 1 stream on 1 of 2 devices · \d+\.\d s$/.test(result.scan_state), `the scan's summary and duration: ${result.scan_state}`);
  const found = await page.$eval(scanRow, (tr) => ({
    name: tr.querySelector('input.add-name')?.value,
    url: tr.querySelector('.scan-url').textContent,
    cells: [...tr.cells].map((c) => c.textContent.trim()),
  }));
  check(found.url === FOUND_URL, `the URL as found, without credentials: ${found.url}`);
  check(found.cells[2] === 'H264' && found.cells[3] === '320x240', `codec and size: ${found.cells}`);
  check(found.name === `${SCAN_HOST}/stream1`, `the name defaults to the found name: ${found.name}`);
  result.found = found;
  // The host with nothing listening, said readably.
  const problemsShown = await page.$$eval('#scan-problems li', (lis) => lis.map((li) => li.textContent));
  check(problemsShown.some((p) => p.includes(DEAD_HOST) && /unreachable/.test(p)), `the dead host is reported: ${problemsShown}`);
  result.problems = problemsShown;

  // Add, under another name.
  await page.fill(`${scanRow} input.add-name`, 'Porch');
  const addStarted = Date.now();
  await page.click(`${scanRow} button.add`);
  await waitFor('"added as porch"', async () => (await text(`${scanRow} .scan-action`)) === 'added as porch', 10000);
  result.connected_ms = await waitFor('the added camera connected and playing', async () => {
    const p = await playing('porch');
    return p?.badge === 'CONNECTED' && p.playing && p.width === 320;
  }, 30000);
  result.added_playing_ms = Date.now() - addStarted;
  const added = framesSent.map((f) => JSON.parse(f)).find((m) => m.method === 'add_external_stream');
  check(added?.params?.stream_name === 'Porch', 'the page asked to add the camera as Porch');
  result.added_url = added.params.stream_url;

  // A second scan finds it added.
  await page.click('#scan-button');
  await waitFor('the second scan', async () => !(await page.isDisabled('#scan-button')) && (await page.$(`${scanRow} input.add-name`)) === null, 15000);
  check((await text(`${scanRow} .scan-action`)) === 'added as porch', 'a scan shows the stream already added');

  // The page as an operator sees it, at 1280x800 and on a phone.
  await page.mouse.move(0, 0);
  await page.evaluate(() => window.scrollTo(0, 0)); // else the sticky top bar is drawn where the page was scrolled to
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `the page fits a narrow screen (${overflow} px too wide)`);
  await page.evaluate(() => document.getElementById('sources').scrollIntoView());
  await page.screenshot({ path: SCREENSHOT_NARROW });
  await page.setViewportSize({ width: 1280, height: 800 });

  // ---- revoke ----------------------------------------------------------------------------------------------------
  // The first click only asks; Cancel leaves the key as it was.
  await page.click(`${keyRow('drone-1')} button.revoke`);
  await page.waitForSelector(`${keyRow('drone-1')} button.confirm-revoke`, { timeout: 2000 });
  check(/removes the camera/.test(await text(`${keyRow('drone-1')} .row-note`)), 'the confirmation says what revoking does');
  await page.click(`${keyRow('drone-1')} button:has-text("Cancel")`);
  await page.waitForSelector(`${keyRow('drone-1')} button.revoke`, { timeout: 2000 });
  check((await playing('drone-1'))?.playing, 'a cancelled revoke changes nothing');
  await page.click(`${keyRow('drone-1')} button.revoke`);
  const revokeStarted = Date.now();
  await page.click(`${keyRow('drone-1')} button.confirm-revoke`);
  await waitFor('the key row gone', async () => (await page.$(keyRow('drone-1'))) === null, 10000);
  await waitFor('the pushed camera gone from the grid', async () => (await page.$(tile('drone-1'))) === null, 10000);
  result.revoked_gone_ms = Date.now() - revokeStarted;
  check(await page.isVisible('#no-keys'), 'the list says there are no pushed cameras');
  check((await playing('porch'))?.playing, 'the added camera plays on');

  // ---- secrets ---------------------------------------------------------------------------------------------------
  const leaks = [];
  for (const [what, s] of [['the stream key', KEY], ['the scan password', SCAN_PASSWORD], ['the encoded scan password', encodeURIComponent(SCAN_PASSWORD)]]) {
    if (consoleTexts.some((t) => t.includes(s))) leaks.push(`${what} on the console`);
    if (requestUrls.some((u) => u.includes(s))) leaks.push(`${what} in a URL the page loaded`);
    for (const where of await traces(s)) leaks.push(`${what} in the page's ${where}`);
  }
  check(leaks.length === 0, leaks.join('; '));
  result.console_lines = consoleTexts.length;

  // ---- a viewer --------------------------------------------------------------------------------------------------
  await page.click('#sign-out');
  await page.waitForSelector('#signin-form', { state: 'visible' });
  check(!(await page.$('#keys tr')) && !(await page.$('#scan-results tr')), 'sign-out empties the panels');
  check((await page.inputValue('#scan-password')) === '', 'sign-out forgets the scan password');
  const framesBefore = framesSent.length;
  await signIn(page, URL_, VIEWER_TOKEN);
  check((await text('#role')) === 'viewer', 'the page shows the viewer role');
  await waitFor('the viewer sees the cameras', async () => (await playing('porch'))?.playing, 20000);
  check(await page.isHidden('#sources'), 'a viewer does not see the add-cameras section');
  check(await page.isHidden('#keys-panel') && await page.isHidden('#discovery-panel'), 'a viewer sees neither panel');
  const viewerCalls = framesSent.slice(framesBefore).map((f) => JSON.parse(f).method);
  check(!viewerCalls.some((m) => ['list_stream_keys', 'create_stream_key', 'discover_external_streams'].includes(m)), `the viewer's page asks only what it may: ${viewerCalls}`);
  check(!consoleTexts.some((t) => t.includes(VIEWER_TOKEN)), 'the viewer credential was written to the console');
  result.viewer_calls = [...new Set(viewerCalls)];

  check(problems.length === 0, problems.join('; '));
  result.total_ms = Date.now() - t0;
  process.stdout.write(`@result ${JSON.stringify(result)}\n`);
} catch (e) {
  try {
    await page.screenshot({ path: FAILURE_SCREENSHOT, fullPage: true });
    log('the page at the failure:', FAILURE_SCREENSHOT);
  } catch {}
  log(e.stack || String(e));
  if (problems.length) log('also:', problems.join('; '));
  process.exitCode = 1;
} finally {
  await close();
  process.stdin.destroy();
}
