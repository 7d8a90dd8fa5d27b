// Drives Debian's Chromium through camhub's page where WebRTC cannot connect (camhub offers an ICE candidate nobody
// can reach), for tests/browser.rs: the tile falls back to low-latency HLS, played by hls.js as camhub serves it, and
// its picture moves on (currentTime advances); no CSP refusal, no page error, the credential never in a URL.
// Ends with one line `@result {json}`; everything else goes to stderr.
//
// Environment: CAMHUB_URL, CAMHUB_TOKEN (an operator JWT), FAILURE_SCREENSHOT, SCREENSHOT, CHROMIUM.

import { check, env, failed, openBrowser, signIn, waitFor } from './chromium.mjs';

const URL_ = env('CAMHUB_URL');
const TOKEN = env('CAMHUB_TOKEN');
const FAILURE_SCREENSHOT = env('FAILURE_SCREENSHOT');
const SCREENSHOT = env('SCREENSHOT');

const log = (...a) => console.error('[hls_fallback]', ...a);

const { page, problems, close } = await openBrowser({ token: TOKEN, log });
const video = () =>
  page.$eval('article.camera video', (v) => ({
    transport: v.dataset.transport ?? '',
    time: v.currentTime,
    width: v.videoWidth,
    firstFrameMs: Number(v.dataset.firstFrameMs ?? NaN),
    hlsJs: typeof window.Hls === 'function',
  }));

try {
  const requests = [];
  page.on('request', (r) => requests.push(new URL(r.url()).pathname));
  const started = Date.now();
  await signIn(page, URL_, TOKEN);
  const waited = await waitFor(page, 'the tile playing over HLS', async () => {
    const v = await video();
    return v.transport === 'hls' && v.time > 0.5;
  }, 45000);
  const first = await video();
  log('playing over HLS after', Date.now() - started, 'ms:', JSON.stringify(first));
  check(first.hlsJs, 'hls.js was loaded from camhub');
  check(requests.includes('/assets/hls.js'), 'the page asked camhub for hls.js');
  check(requests.some((p) => p.startsWith('/whep/')), 'WebRTC was tried first');
  check(requests.some((p) => /^\/hls\/cam0\/part\d+\.mp4$/.test(p)), 'hls.js reads parts (low-latency mode)');
  // currentTime and the buffer's end (behind the live edge: their difference) every half second for 4 s.
  const watchStart = Date.now();
  const samples = [];
  for (let i = 0; i < 8; i++) {
    await page.waitForTimeout(500);
    samples.push(await page.$eval('article.camera video', (v) => {
      const end = v.buffered.length ? v.buffered.end(v.buffered.length - 1) : NaN;
      return `${v.currentTime.toFixed(2)}/${end.toFixed(2)}`;
    }));
  }
  const watched = (Date.now() - watchStart) / 1000;
  log('currentTime/buffered end every 0.5 s:', samples.join(' '));
  const later = await video();
  const advanced = later.time - first.time;
  log('currentTime', first.time.toFixed(2), '->', later.time.toFixed(2), `in ${watched.toFixed(1)} s`);
  check(advanced >= 0.75 * watched, `currentTime advanced ${advanced.toFixed(2)} s in ${watched.toFixed(1)} s`);
  check(later.width === 320, `the picture is the camera's (width ${later.width})`);
  await page.screenshot({ path: SCREENSHOT });
  check(problems.length === 0, problems.join('; '));
  const result = {
    fallback_after_ms: Date.now() - started - watched * 1000,
    waited_ms: waited,
    first_frame_ms: first.firstFrameMs,
    advanced_s: advanced,
    watched_s: watched,
    parts_requested: requests.filter((p) => p.includes('/part')).length,
  };
  process.stdout.write(`@result ${JSON.stringify(result)}\n`);
} catch (e) {
  await failed(page, e, { log, problems, screenshot: FAILURE_SCREENSHOT });
} finally {
  await close();
}
