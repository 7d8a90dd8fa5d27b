// Object detection on camhub's page, for tests/browser.rs: a test camera shows a photo of a person from time to time;
// the page must draw a box labelled "person" over the person in the live video (over the picture itself, which the
// 4:3 camera leaves pillarboxed in the 16:9 tile), list the event with its picture, open that picture, and turn
// detection off and on again from the camera's toggle. Prints one line `@result {json}` on stdout; everything else goes
// to stderr.
//
// Environment: CAMHUB_URL (http://127.0.0.1:PORT/), CAMHUB_TOKEN (an operator JWT), DEVICE (the camera's id),
// CAMERA_NAME, PERSON (the person's box in the camera's frame: x1,y1,x2,y2 as fractions), SCREENSHOT (PNG path),
// FAILURE_SCREENSHOT (PNG path), CHROMIUM (default /usr/bin/chromium).

import { check, env, failed, openBrowser, signIn, waitFor as poll } from './chromium.mjs';

const URL_ = env('CAMHUB_URL');
const TOKEN = env('CAMHUB_TOKEN');
const DEVICE = env('DEVICE');
const CAMERA_NAME = env('CAMERA_NAME');
const PERSON = env('PERSON').split(',').map(Number);
const SCREENSHOT = env('SCREENSHOT');
const FAILURE_SCREENSHOT = env('FAILURE_SCREENSHOT');
/** The photo comes back within a cycle of its schedule (absent, present) however late the page signed in. */
const BOX_TIMEOUT_MS = 100000;

const log = (...a) => console.error('[detections]', ...a);

const { page, problems, close } = await openBrowser({ token: TOKEN, log });
const waitFor = (what, fn, timeoutMs) => poll(page, what, fn, timeoutMs);
const tile = `article.camera[data-device="${DEVICE}"]`;
const personBox = `${tile} .detection[data-label="person"]`;

function iou(a, b) {
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const area = (r) => (r[2] - r[0]) * (r[3] - r[1]);
  return (w * h) / (area(a) + area(b) - w * h);
}

/**
 * Where the person's box is drawn, as fractions of the picture: the picture's rectangle is worked out here from the
 * video element's box and the stream's size (object-fit: contain), independently of the page's own code.
 */
const measureBox = () =>
  page.$eval(tile, (el, selector) => {
    const video = el.querySelector('video');
    const box = el.querySelector(selector);
    if (!box) return null;
    const v = video.getBoundingClientRect();
    const b = box.getBoundingClientRect();
    const scale = Math.min(v.width / video.videoWidth, v.height / video.videoHeight);
    const pic = {
      left: v.left + (v.width - video.videoWidth * scale) / 2,
      top: v.top + (v.height - video.videoHeight * scale) / 2,
      width: video.videoWidth * scale,
      height: video.videoHeight * scale,
    };
    return {
      video: [video.videoWidth, video.videoHeight],
      element: [v.width, v.height],
      picture: [pic.left - v.left, pic.top - v.top, pic.width, pic.height],
      fractions: [
        (b.left - pic.left) / pic.width,
        (b.top - pic.top) / pic.height,
        (b.right - pic.left) / pic.width,
        (b.bottom - pic.top) / pic.height,
      ],
      label: box.querySelector('.detection-label').textContent,
      visible: getComputedStyle(box.parentElement).visibility === 'visible' && !box.parentElement.hidden,
    };
  }, '.detection[data-label="person"]');

/**
 * Whether the video shows the photo: its field of dry grass (right of the person, low in the frame) is tan, where the
 * test pattern behind it is dark blue. Read from the decoded picture through a canvas.
 */
const showsPhoto = () =>
  page.$eval(`${tile} video`, (video) => {
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    const g = canvas.getContext('2d');
    g.drawImage(video, 0, 0);
    const { data } = g.getImageData(canvas.width * 0.75, canvas.height * 0.7, canvas.width * 0.15, canvas.height * 0.1);
    let red = 0;
    let blue = 0;
    for (let i = 0; i < data.length; i += 4) {
      red += data[i];
      blue += data[i + 2];
    }
    return red > blue * 1.3;
  });

const detectToggle = () =>
  page.$eval(`${tile} button.detect`, (b) => ({
    hidden: b.hidden,
    disabled: b.disabled,
    pressed: b.getAttribute('aria-pressed'),
    text: b.textContent.trim(),
  }));

const result = {};
try {
  await signIn(page, URL_, TOKEN);

  // The camera plays; its toggle says detection is on, and an operator may change it.
  await waitFor(`${DEVICE} playing`, () =>
    page.$eval(tile, (el) => el.querySelector('.video-box').dataset.playing === 'true' && el.querySelector('video').videoWidth > 0), 30000);
  await waitFor('the detect toggle', async () => !(await detectToggle()).hidden, 10000);
  const toggle = await detectToggle();
  check(toggle.pressed === 'true' && /^Detect · (keyframes|every frame|idle)$/.test(toggle.text), `detection shown on: ${JSON.stringify(toggle)}`);
  check(!toggle.disabled, 'an operator may turn detection off');
  result.toggle = toggle.text;

  // The person appears: a box over her, in the picture, not in the bands beside it. The event can come before the
  // video shows her (camhub decodes the frame at once; the browser plays it out after its jitter buffer): the box is
  // measured and pictured once the photo is on screen.
  result.box_after_ms = await waitFor('a box labelled person', async () => (await measureBox())?.visible, BOX_TIMEOUT_MS);
  result.video_after_box_ms = await waitFor('the photo on the video', showsPhoto, 5000);
  const drawn = await measureBox();
  check(drawn?.visible, 'the box stays while the video catches up');
  log('box', JSON.stringify(drawn));
  check(drawn.video[0] * 3 === drawn.video[1] * 4, `a 4:3 stream, got ${drawn.video}`);
  check(drawn.picture[0] > 10, `the picture is pillarboxed in its tile: ${drawn.picture}`);
  check(/^person \d{1,3}%$/.test(drawn.label), `the box says what and how sure: ${drawn.label}`);
  check(drawn.fractions.every((f) => f >= -0.01 && f <= 1.01), `the box lies in the picture: ${drawn.fractions}`);
  result.box = drawn.fractions.map((f) => Math.round(f * 1000) / 1000);
  result.iou = Math.round(iou(drawn.fractions, PERSON) * 1000) / 1000;
  result.label = drawn.label;
  check(result.iou >= 0.4, `the box ${result.box} lies over the person at ${PERSON} (IoU ${result.iou})`);

  // The event is listed, newest first, with its picture.
  await waitFor('the event listed with its picture', () =>
    page.$$eval('#events li', (rows) => rows.some((li) => /person/.test(li.textContent) && li.querySelector('img.event-thumb')?.naturalWidth > 0)), 10000);
  const row = await page.$$eval('#events li', (rows) => {
    const li = rows.find((r) => /person/.test(r.textContent));
    const img = li.querySelector('img.event-thumb');
    return { id: Number(li.dataset.event), text: li.textContent, src: img.src, width: img.naturalWidth, height: img.naturalHeight };
  });
  check(row.src.startsWith('blob:'), 'the picture is shown from a blob URL');
  check(row.text.includes(CAMERA_NAME), `the row names the camera: ${row.text}`);
  result.event = row;

  // The page as a user sees it: the box over the video, the event beside it.
  await page.mouse.move(0, 0);
  check((await measureBox())?.visible && (await showsPhoto()), 'the box and the photo are still there for the screenshot');
  await page.screenshot({ path: SCREENSHOT });

  // The row opens the picture, at the camera's size.
  await page.click(`#events li[data-event="${row.id}"] button.event`);
  await page.waitForSelector('#snapshot-dialog[open]', { timeout: 5000 });
  await waitFor('the picture', () => page.$eval('#snapshot-large', (img) => img.complete && img.naturalWidth > 0), 5000);
  result.picture = await page.$eval('#snapshot-large', (img) => [img.naturalWidth, img.naturalHeight]);
  await page.click('#snapshot-dialog button[value="close"]');
  await page.waitForSelector('#snapshot-dialog', { state: 'hidden' });

  // Detection off from the toggle: camhub ends the track and the box goes; on again, the toggle says so.
  await page.click(`${tile} button.detect`);
  await waitFor('detection off', async () => (await detectToggle()).pressed === 'false', 10000);
  check((await detectToggle()).text === 'Detect off', `the toggle says off: ${(await detectToggle()).text}`);
  await waitFor('the box gone', async () => (await page.$(personBox)) === null, 10000);
  await page.click(`${tile} button.detect`);
  await waitFor('detection on again', async () => (await detectToggle()).pressed === 'true', 10000);

  check(problems.length === 0, problems.join('; '));
  process.stdout.write(`@result ${JSON.stringify(result)}\n`);
} catch (e) {
  await failed(page, e, { log, problems, screenshot: FAILURE_SCREENSHOT });
} finally {
  await close();
}
