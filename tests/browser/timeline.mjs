// Drives Debian's Chromium through camhub's timeline, for tests/browser.rs: sign in, the recorded span of a camera on
// its strip, a click just before it plays the recording through /playback (a media token in the URL) in the page's
// <video>, whose currentTime must advance; the playhead follows it. Ends with one line `@result {json}`; everything
// else goes to stderr.
//
// Environment: CAMHUB_URL (http://127.0.0.1:PORT/), CAMHUB_TOKEN (an operator JWT), DEVICE (the recorded camera),
// SCREENSHOT (PNG path), FAILURE_SCREENSHOT (PNG path), CHROMIUM (default /usr/bin/chromium).

import { check, env, failed, openBrowser, signIn, waitFor as poll } from './chromium.mjs';

const URL_ = env('CAMHUB_URL');
const TOKEN = env('CAMHUB_TOKEN');
const DEVICE = env('DEVICE', 'cam0');
const SCREENSHOT = env('SCREENSHOT');
const FAILURE_SCREENSHOT = env('FAILURE_SCREENSHOT');

const log = (...a) => console.error('[timeline]', ...a);
const { page, problems, close } = await openBrowser({ token: TOKEN, log });
const waitFor = (what, fn, timeoutMs) => poll(page, what, fn, timeoutMs);
const result = {};

try {
  const playbacks = [];
  page.on('response', (r) => {
    if (r.url().includes('/playback/')) playbacks.push({ status: r.status(), gaps: r.headers()['x-playback-gaps'] ?? null });
  });
  await signIn(page, URL_, TOKEN);
  const row = `.tl-row[data-device="${DEVICE}"]`;
  await waitFor('the recorded span on the strip', () => page.$(`${row} .tl-span`), 20000);
  result.spans = await page.$$eval(`${row} .tl-span`, (els) => els.length);
  // Just before the span's left edge (a pixel of the strip is several seconds): the playback starts where the
  // recording does.
  await page.$eval(row, (el) => el.scrollIntoView({ block: 'center' }));
  const span = await (await page.$(`${row} .tl-span`)).boundingBox();
  const track = await (await page.$(`${row} .tl-track`)).boundingBox();
  const x = Math.max(track.x + 1, span.x - 3);
  const clicked = Date.now();
  await page.mouse.click(x, track.y + track.height / 2);
  await page.waitForSelector('#playback', { state: 'visible', timeout: 5000 });
  const time = () => page.$eval('#playback-video', (v) => v.currentTime);
  result.first_frame_ms = await waitFor('the playback to start', async () => (await time()) > 0, 20000);
  const t1 = await time();
  await page.waitForTimeout(1500);
  const t2 = await time();
  result.current_time = [t1, t2];
  check(t2 > t1 + 0.5, `currentTime advances: ${t1} then ${t2}`);
  const video = await page.$eval('#playback-video', (v) => ({ width: v.videoWidth, height: v.videoHeight, src: v.src }));
  result.video = { width: video.width, height: video.height };
  check(video.width > 0 && video.height > 0, `a picture: ${JSON.stringify(video)}`);
  check(/\/playback\/[^?]+\?start=.*&duration=\d+&token=/.test(video.src), `a playback URL with a media token: ${video.src.slice(0, 80)}`);
  check(!video.src.includes(TOKEN), 'the signed-in credential is not in the URL');
  check(await page.isVisible(`${row} .tl-playhead`), 'the playhead is on the strip');
  result.playbacks = playbacks;
  check(playbacks.some((p) => p.status === 200 || p.status === 206), `a playback answered: ${JSON.stringify(playbacks)}`);
  result.click_to_playing_ms = Date.now() - clicked;
  await page.$eval('#playback', (el) => el.scrollIntoView({ block: 'end' }));
  await page.screenshot({ path: SCREENSHOT });
  await page.click('#playback-close');
  await page.waitForSelector('#playback', { state: 'hidden', timeout: 5000 });

  check(problems.length === 0, problems.join('; '));
  process.stdout.write(`@result ${JSON.stringify(result)}\n`);
} catch (e) {
  await failed(page, e, { log, problems, screenshot: FAILURE_SCREENSHOT });
} finally {
  await close();
}
