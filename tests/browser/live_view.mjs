// Drives Debian's Chromium (never a downloaded browser) through camhub's page, for tests/browser.rs: sign in, live
// WHEP video, status badges across a camera crash and return, a snapshot, a recording download, a camera withdrawn
// from publishing and back, sign out, a bad
// credential. The Rust test owns the processes: this script asks it to act with lines `@cmd kill-camera`,
// `@cmd restart-camera`, `@cmd stop-streaming ID`, `@cmd start-streaming ID` on stdout and waits for `ok` on stdin;
// it ends with one line `@result {json}`. Everything else goes to stderr.
//
// Environment: CAMHUB_URL (http://127.0.0.1:PORT/), CAMHUB_TOKEN (an operator JWT), CAMERAS (how many),
// SCREENSHOT (PNG path), FAILURE_SCREENSHOT (PNG path), DOWNLOAD_DIR, CHROMIUM (default /usr/bin/chromium).

import { statSync } from 'node:fs';
import { join } from 'node:path';
import readline from 'node:readline';
import { check, env, failed, openBrowser, signIn, waitFor as poll } from './chromium.mjs';

const URL_ = env('CAMHUB_URL');
const TOKEN = env('CAMHUB_TOKEN');
const CAMERAS = Number(env('CAMERAS', '2'));
const SCREENSHOT = env('SCREENSHOT');
const FAILURE_SCREENSHOT = env('FAILURE_SCREENSHOT');
const DOWNLOAD_DIR = env('DOWNLOAD_DIR');

const log = (...a) => console.error('[live_view]', ...a);

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
  if (reply !== 'ok') throw new Error(`${command}: ${reply}`);
}

// ---- the browser --------------------------------------------------------------------------------------------------
const { page, problems, close } = await openBrowser({ token: TOKEN, log, acceptDownloads: true });

const result = { first_frame_ms: [], sessions: [] };

/** Per camera: device, badge, video facts, first-frame time, session count. */
const tiles = () =>
  page.$$eval('article.camera', (els) =>
    els.map((el) => {
      const v = el.querySelector('video');
      return {
        device: el.dataset.device,
        badge: el.querySelector('.badge').textContent,
        width: v.videoWidth,
        height: v.videoHeight,
        time: v.currentTime,
        firstFrameMs: Number(v.dataset.firstFrameMs ?? NaN),
        answerMs: Number(v.dataset.answerMs ?? NaN),
        connectedMs: Number(v.dataset.connectedMs ?? NaN),
        sessions: Number(v.dataset.sessions),
        height_px: el.getBoundingClientRect().height,
      };
    }),
  );

const waitFor = (what, fn, timeoutMs) => poll(page, what, fn, timeoutMs);

/** Every camera plays a new session (`sessions` above `before`) and its picture moves for 2 s. */
async function assertPlaying(before, label) {
  await waitFor(
    `${label}: a first frame on every camera`,
    async () => (await tiles()).every((t) => t.sessions > before && t.width > 0),
    30000,
  );
  const a = await tiles();
  await page.waitForTimeout(2000);
  const b = await tiles();
  for (const t of b) {
    const prev = a.find((x) => x.device === t.device);
    check(t.width === 320 && t.height === 240, `${label}: ${t.device} decodes 320x240, got ${t.width}x${t.height}`);
    check(t.time - prev.time > 1.0, `${label}: ${t.device} video advanced only ${(t.time - prev.time).toFixed(2)} s in 2 s`);
    result.first_frame_ms.push(t.firstFrameMs);
    result.sessions.push({
      label, device: t.device, answer_ms: t.answerMs, connected_ms: t.connectedMs, first_frame_ms: t.firstFrameMs,
    });
  }
  log(label, b.map((t) => `${t.device} ${t.width}x${t.height} first frame ${t.firstFrameMs} ms`).join(', '));
}

try {
  await signIn(page, URL_, TOKEN);
  check((await page.textContent('#role')).trim() === 'operator', 'the page shows the operator role');

  // The cameras appear with their badges; the card does not change size when video arrives.
  await waitFor(`${CAMERAS} cameras CONNECTED`, async () => {
    const t = await tiles();
    return t.length === CAMERAS && t.every((x) => x.badge === 'CONNECTED');
  }, 20000);
  const heightsBefore = (await tiles()).map((t) => t.height_px);
  await assertPlaying(0, 'first load');
  const heightsAfter = (await tiles()).map((t) => t.height_px);
  check(JSON.stringify(heightsBefore) === JSON.stringify(heightsAfter), `cards kept their size (${heightsBefore} -> ${heightsAfter})`);
  const facts = await page.textContent('article.camera .facts');
  check(facts.includes('320x240') && /fps/.test(facts), `resolution and fps shown: ${facts}`);

  // A snapshot is taken and shown.
  const first = page.locator('article.camera').first();
  await first.locator('button.snapshot').click();
  await page.waitForSelector('#snapshot-dialog[open]', { timeout: 10000 });
  await waitFor('the snapshot image', () => page.$eval('#snapshot-large', (img) => img.complete && img.naturalWidth > 0), 5000);
  const snap = await page.$eval('#snapshot-large', (img) => ({ w: img.naturalWidth, h: img.naturalHeight, src: img.src }));
  check(snap.w === 320 && snap.h === 240, `snapshot is 320x240, got ${snap.w}x${snap.h}`);
  check(snap.src.startsWith('blob:'), 'the snapshot is shown from a blob URL');
  result.snapshot = { width: snap.w, height: snap.h };
  await page.click('#snapshot-dialog button[value="close"]');
  await page.waitForSelector('#snapshot-dialog', { state: 'hidden' });
  check(await first.locator('button.thumb img').evaluate((img) => img.naturalWidth > 0), 'the snapshot thumbnail shows');

  // The recordings list, newest first, with a download that works.
  await waitFor('a recording in the list', async () => (await page.$$('#recordings li')).length > 0, 10000);
  const names = await page.$$eval('#recordings a.download', (as) => as.map((a) => a.dataset.filename));
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: 15000 }),
    page.click('#recordings li:first-child a.download'),
  ]);
  const saved = join(DOWNLOAD_DIR, download.suggestedFilename());
  await download.saveAs(saved);
  result.recordings = names;
  result.download = { filename: download.suggestedFilename(), path: saved, size: statSync(saved).size };
  check(download.suggestedFilename() === names[0], `the download is named ${names[0]}`);

  // The page as a user sees it.
  await page.mouse.move(0, 0);
  await page.screenshot({ path: SCREENSHOT });

  // The camera dies: badges turn DISCONNECTED; it returns: CONNECTED, and video plays again.
  const sessionsBefore = Math.min(...(await tiles()).map((t) => t.sessions));
  await ask('kill-camera');
  result.disconnected_after_ms = await waitFor('DISCONNECTED badges', async () =>
    (await tiles()).every((t) => t.badge === 'DISCONNECTED'), 15000);
  const overlay = await page.textContent('article.camera .overlay-text');
  check(/disconnected/i.test(overlay), `the video says the camera is disconnected: ${overlay}`);
  await ask('restart-camera');
  result.connected_after_ms = await waitFor('CONNECTED badges', async () =>
    (await tiles()).every((t) => t.badge === 'CONNECTED'), 20000);
  await assertPlaying(sessionsBefore, 'after the camera returned');

  // A reload keeps the tab's sign-in (sessionStorage) and starts new sessions.
  await page.reload();
  await page.waitForSelector('#app-view', { state: 'visible', timeout: 10000 });
  await assertPlaying(0, 'after reload');

  // A camera withdrawn from publishing says so (the page sees it within its 5 s list refresh) and the other plays
  // on; published again, it plays again.
  const overlayOf = (device) => page.textContent(`article.camera[data-device="${device}"] .overlay-text`);
  const sessionsOf = async (device) => (await tiles()).find((t) => t.device === device).sessions;
  const cam1Sessions = await sessionsOf('cam1');
  await ask('stop-streaming cam1');
  await waitFor('cam1 shown as not published', async () => /not published/i.test(await overlayOf('cam1')), 15000);
  check(
    (await page.getAttribute('article.camera[data-device="cam0"] .video-box', 'data-playing')) === 'true',
    'cam0 keeps playing while cam1 is withdrawn',
  );
  await ask('start-streaming cam1');
  await waitFor('cam1 playing again', async () => (await sessionsOf('cam1')) > cam1Sessions, 20000);

  // Sign out forgets the credential; a bad one is refused visibly.
  await page.click('#sign-out');
  await page.waitForSelector('#signin-form', { state: 'visible' });
  check((await page.evaluate(() => sessionStorage.length)) === 0, 'sign-out clears sessionStorage');
  await page.fill('#credential', 'not-a-valid-token');
  await page.click('#signin-button');
  await page.waitForSelector('#signin-error', { state: 'visible', timeout: 10000 });
  result.bad_token_message = (await page.textContent('#signin-error')).trim();
  check(/sign-in failed/i.test(result.bad_token_message), `bad token message: ${result.bad_token_message}`);
  check(await page.isHidden('#app-view'), 'a bad token shows no cameras');

  check(problems.length === 0, problems.join('; '));
  process.stdout.write(`@result ${JSON.stringify(result)}\n`);
} catch (e) {
  await failed(page, e, { log, problems, screenshot: FAILURE_SCREENSHOT });
} finally {
  await close();
  process.stdin.destroy();
}
