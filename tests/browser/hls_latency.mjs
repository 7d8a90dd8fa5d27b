// Glass-to-glass latency in Chromium, for scripts/bench/hls.sh: camhub's page plays the first camera (WHEP, or HLS
// when camhub publishes no WebRTC), and for SECONDS after WARM seconds each presented frame is drawn to a canvas and
// the wall-clock time the test camera drew into it (`camhub testcam --clock-blocks`: 16-pixel blocks along the bottom,
// Unix ms low 32 bits then a check byte) is read back and taken from the browser's clock (same machine, same clock).
// Prints one line `@result {json}`: the transport and every frame's latency in ms; everything else goes to stderr.
//
// Environment: CAMHUB_URL, CAMHUB_TOKEN, SECONDS (10), WARM (3), FAILURE_SCREENSHOT (optional), CHROMIUM.

import { env, failed, openBrowser, signIn, waitFor } from './chromium.mjs';

const URL_ = env('CAMHUB_URL');
const TOKEN = env('CAMHUB_TOKEN');
const SECONDS = Number(env('SECONDS', '10'));
const WARM = Number(env('WARM', '3'));
const FAILURE_SCREENSHOT = env('FAILURE_SCREENSHOT', '');

const log = (...a) => console.error('[hls_latency]', ...a);
const { page, problems, close } = await openBrowser({ token: TOKEN, log });

try {
  await signIn(page, URL_, TOKEN);
  await waitFor(page, 'the first camera playing', () =>
    page.$eval('article.camera video', (v) => v.currentTime > 0.2 && v.videoWidth > 0), 60000);
  await page.waitForTimeout(WARM * 1000);
  const transport = await page.$eval('article.camera video', (v) => v.dataset.transport ?? '');
  const read = await page.evaluate(async (seconds) => {
    const video = document.querySelector('article.camera video');
    const canvas = document.createElement('canvas');
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    const BLOCK = 16;
    const latencies = [];
    let unreadable = 0;
    const end = performance.now() + seconds * 1000;
    await new Promise((resolve) => {
      const frame = () => {
        const now = Date.now();
        if (performance.now() > end) return resolve();
        const [w, h] = [video.videoWidth, video.videoHeight];
        canvas.width = w;
        canvas.height = h;
        ctx.drawImage(video, 0, 0, w, h);
        const perRow = Math.floor(w / BLOCK);
        const rows = Math.ceil(40 / perRow);
        const data = ctx.getImageData(0, h - rows * BLOCK, w, rows * BLOCK).data;
        let bits = 0n;
        for (let i = 0; i < 40; i++) {
          const row = Math.floor(i / perRow);
          const col = i % perRow;
          // Row 0 is the bottom band; the image data starts at the top band.
          const y = (rows - 1 - row) * BLOCK + BLOCK / 2;
          const x = col * BLOCK + BLOCK / 2;
          bits = (bits << 1n) | (data[(y * w + x) * 4] > 128 ? 1n : 0n);
        }
        const millis = Number(bits >> 8n);
        const check = Number(bits & 0xffn);
        const xor = ((millis >>> 24) ^ (millis >>> 16) ^ (millis >>> 8) ^ millis) & 0xff;
        if (xor === check) {
          const latency = (((now % 2 ** 32) - millis) + 2 ** 32) % 2 ** 32;
          if (latency < 60000) latencies.push(latency);
          else unreadable += 1;
        } else {
          unreadable += 1;
        }
        video.requestVideoFrameCallback(frame);
      };
      video.requestVideoFrameCallback(frame);
    });
    return { latencies, unreadable };
  }, SECONDS);
  const sorted = [...read.latencies].sort((a, b) => a - b);
  const p50 = sorted[Math.floor(sorted.length / 2)];
  log(`${transport}: ${sorted.length} frames read, ${read.unreadable} unreadable, p50 ${p50} ms`);
  if (problems.length) log('problems:', problems.join('; '));
  if (sorted.length === 0) throw new Error('no frame carried a readable clock');
  process.stdout.write(`@result ${JSON.stringify({ transport, latencies: read.latencies, unreadable: read.unreadable })}\n`);
} catch (e) {
  await failed(page, e, { log, problems, screenshot: FAILURE_SCREENSHOT });
} finally {
  await close();
}
