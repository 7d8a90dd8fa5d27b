// Publishes Debian's Chromium's fake camera and microphone to camhub over WHIP, for tests/whip_ingest.rs: an
// RTCPeerConnection with sendonly transceivers preferring H.264, non-trickle (the offer waits for ICE gathering), the
// offer POSTed by this script (not the page: the stream key never enters the browser), the answer set. A wrong key is
// refused (401), a second publisher while the first is on too (409), DELETE of the session ends it (200, then 404).
// The Rust test owns camhub: this script asks it to check what camhub made of the stream with `@cmd publishing` and
// `@cmd deleted` on stdout and waits for `ok` on stdin; it ends with one line `@result {json}`. Everything else goes
// to stderr.
//
// Environment: CAMHUB_URL (http://127.0.0.1:PORT/), DEVICE (the pushed camera), STREAM_KEY, FAILURE_SCREENSHOT (PNG
// path), CHROMIUM (default /usr/bin/chromium).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';
import { check, env } from './chromium.mjs';

const URL_ = env('CAMHUB_URL');
const DEVICE = env('DEVICE');
const KEY = env('STREAM_KEY');
const FAILURE_SCREENSHOT = env('FAILURE_SCREENSHOT');

const log = (...a) => console.error('[whip_publish]', ...a);

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

// ---- WHIP, from this script ---------------------------------------------------------------------------------------
async function post(offer, key) {
  const res = await fetch(`${URL_}whip/${DEVICE}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${key}` },
    body: offer,
  });
  return { status: res.status, location: res.headers.get('location'), body: await res.text() };
}

async function remove(location, key) {
  const res = await fetch(new URL(location, URL_), { method: 'DELETE', headers: { Authorization: `Bearer ${key}` } });
  return res.status;
}

// ---- the browser --------------------------------------------------------------------------------------------------
const profile = mkdtempSync(join(tmpdir(), 'camhub-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // The fake camera (a moving test picture, 640x480) and microphone (a beep), granted without a prompt.
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    '--allow-loopback-in-peer-connection',
    // Host candidates as addresses, not mDNS names, so camhub's ICE agent can reach them.
    '--disable-features=WebRtcHideLocalIpsWithMdns',
  ],
});
const page = context.pages()[0] ?? (await context.newPage());
// The page is camhub's health check, without a favicon: its 404 is no news.
page.on('console', (msg) => msg.type() === 'error' && !msg.text().includes('404') && log('console error:', msg.text()));

const result = {};
try {
  // Any page of camhub's origin: 127.0.0.1 is a secure context, where getUserMedia is allowed.
  await page.goto(`${URL_}health/ready`);
  await page.evaluate(async () => {
    window.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    /** A new connection sending the fake camera and microphone; resolves with its offer once ICE gathering completed. */
    window.offer = async () => {
      const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
      for (const track of window.stream.getTracks()) {
        if (track.kind === 'video') track.contentHint = 'detail';
        const t = pc.addTransceiver(track, { direction: 'sendonly', streams: [window.stream] });
        if (track.kind === 'video') {
          const codecs = RTCRtpSender.getCapabilities('video').codecs;
          const h264 = codecs.filter((c) => c.mimeType === 'video/H264');
          t.setCodecPreferences([...h264, ...codecs.filter((c) => c.mimeType !== 'video/H264')]);
          // Under CPU load, fewer frames rather than a smaller picture: the test checks the camera's size.
          const params = t.sender.getParameters();
          params.degradationPreference = 'maintain-resolution';
          await t.sender.setParameters(params);
        }
      }
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((resolve) => {
        if (pc.iceGatheringState === 'complete') resolve();
        pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
      });
      (window.pcs ??= []).push(pc);
      return { index: window.pcs.length - 1, sdp: pc.localDescription.sdp };
    };
    window.answer = (index, sdp) => window.pcs[index].setRemoteDescription({ type: 'answer', sdp });
    window.state = (index) => window.pcs[index].connectionState;
  });
  const settings = await page.evaluate(() => window.stream.getVideoTracks()[0].getSettings());
  result.camera = [settings.width, settings.height];
  log('fake camera', settings.width, 'x', settings.height, 'at', settings.frameRate, 'fps');

  // A wrong key: refused before anything is negotiated.
  const first = await page.evaluate(() => window.offer());
  const wrong = await post(first.sdp, `sk_${'0'.repeat(64)}`);
  check(wrong.status === 401, `a wrong key is refused with 401, got ${wrong.status} ${wrong.body}`);

  // The right key: 201, the answer, where the session lives.
  const posted = Date.now();
  const ok = await post(first.sdp, KEY);
  result.answer_ms = Date.now() - posted;
  check(ok.status === 201, `the offer is answered with 201, got ${ok.status} ${ok.body}`);
  check(ok.location?.startsWith(`/whip/${DEVICE}/`), `Location names the session: ${ok.location}`);
  check(/^m=video \d+ UDP\/TLS\/RTP\/SAVPF \d+\r?$/m.test(ok.body), `the answer keeps one video format:\n${ok.body}`);
  check(/a=rtpmap:\d+ H264\/90000/.test(ok.body), `the answer takes H.264:\n${ok.body}`);
  await page.evaluate(({ index, sdp }) => window.answer(index, sdp), { index: first.index, sdp: ok.body });
  const started = Date.now();
  for (;;) {
    const state = await page.evaluate((i) => window.state(i), first.index);
    if (state === 'connected') break;
    check(state !== 'failed' && state !== 'closed', `the connection ${state}`);
    check(Date.now() - started < 20000, `not connected after 20 s (${state})`);
    await page.waitForTimeout(50);
  }
  result.connected_ms = Date.now() - started;
  log('connected', result.connected_ms, 'ms after the answer');
  await ask('publishing');

  // A second publisher while the first is on.
  const second = await page.evaluate(() => window.offer());
  const busy = await post(second.sdp, KEY);
  check(busy.status === 409, `a second publisher is refused with 409, got ${busy.status} ${busy.body}`);

  // The session's end: 200, and then it is gone. A wrong key cannot end it.
  check((await remove(ok.location, `sk_${'1'.repeat(64)}`)) === 401, 'DELETE with a wrong key is refused');
  result.delete_status = await remove(ok.location, KEY);
  check(result.delete_status === 200, `DELETE answers 200, got ${result.delete_status}`);
  await ask('deleted');
  check((await remove(ok.location, KEY)) === 404, 'a session ended is not found');

  process.stdout.write(`@result ${JSON.stringify(result)}\n`);
} catch (e) {
  try {
    await page.screenshot({ path: FAILURE_SCREENSHOT });
  } catch {}
  log(e.stack || String(e));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  process.stdin.destroy();
}
