// camhub's page: sign in, a live grid of cameras (WHEP video, status badges, snapshots, boxes around detected objects,
// a detection toggle), the recent detections and the recordings; for operators, pushed cameras' stream keys and a
// search for network cameras to add. Talks to camhub only: JSON-RPC over the WebSocket at /ws, WHEP and file downloads
// over HTTP with the credential in a header.
// The credential lives in sessionStorage (this tab only) and is never put in a URL or logged. A new stream key and the
// password typed for a scan are never stored, put in a URL the page loads, or logged; the key is shown once and taken
// out of the page when its box is closed.

import { AUTH_FAILED, RpcClient, RpcError } from './rpc.js';
import { HlsSession } from './hlsplay.js';
import { WhepError, WhepSession } from './whep.js';
import { Timeline } from './timeline.js';

const CREDENTIAL_KEY = 'camhub.credential';
const CAMERA_REFRESH_MS = 5000;
const RECORDING_REFRESH_MS = 30000;
const VIDEO_RETRY_MIN_MS = 1000;
const VIDEO_RETRY_MAX_MS = 15000;
/** How long a peer connection may stay `disconnected` before the session is started again. */
const PEER_GRACE_MS = 4000;
/** How long WebRTC may take to show a frame before a tile that can play HLS falls back to it. */
const WEBRTC_FALLBACK_MS = 5000;
/** Roles that may call take_snapshot. */
const SNAPSHOT_ROLES = new Set(['operator', 'admin']);
/** Roles that may call set_detection. */
const DETECTION_ROLES = new Set(['operator', 'admin']);
/**
 * A box that no event has touched for this long is taken for an `end` the page missed, and removed. camhub sends
 * `update` only when an object moves or scores higher, so this also removes the box of an object that stands still.
 */
const DETECTION_STALE_MS = 10000;
/** How many detections the list shows, newest first. */
const EVENTS_LIMIT = 20;
const EVENTS_REFRESH_MS = 30000;
/** A camera's `decode_mode`, as its detect toggle says it. */
const DECODE_MODES = { keyframes: 'keyframes', all: 'every frame', off: 'idle' };
/** Roles that may create, list and revoke stream keys, and find and add network cameras. */
const SOURCE_ROLES = new Set(['operator', 'admin']);
/** The stream keys list is refreshed this often while the page is visible, besides a pushed camera's status change. */
const KEYS_REFRESH_MS = 12000;
/** A revoke not confirmed within this long is called off. */
const REVOKE_CONFIRM_MS = 10000;
/** camhub answers a scan within about twice its timeout; the call waits this much longer. */
const SCAN_SLACK_MS = 10000;
/** The hosts a scan may name. */
const SCAN_MAX_HOSTS = 64;
/** How asking a device went (`devices[].status` of discover_external_streams), in words. */
const DEVICE_STATUS = {
  OK: 'OK',
  AUTH_FAILED: 'credentials refused or needed',
  NO_STREAMS: 'no video found',
  UNREACHABLE: 'unreachable',
  ERROR: 'failed',
};

const $ = (id) => document.getElementById(id);

const page = {
  rpc: null,
  role: null,
  tiles: new Map(),
  timers: [],
  refreshQueued: false,
  everOnline: false,
  /** The last get_inference_status result (or why it failed), null before the first. */
  inference: null,
  eventsQueued: false,
  /** Bumped by every list_events call; an answer to an older one is dropped. */
  eventsGeneration: 0,
  /** How many detections the list shows, null before it is first loaded. */
  eventCount: null,
  /** Detection pictures as promises of blob URLs, by `thumbnailKey`; revoked when no longer listed. */
  thumbnails: new Map(),
  /** The stream keys list's rows by pushed camera id; a status change of one of these cameras refreshes the list. */
  keyRows: new Map(),
  keysQueued: false,
  /** Bumped by every list_stream_keys call; an answer to an older one is dropped. */
  keysGeneration: 0,
  /** Bumped by every scan and at sign-out; the answer to an older scan is dropped. */
  scanGeneration: 0,
  /** The interval that shows a running scan's elapsed time; 0 while none runs. */
  scanTimer: 0,
  /** Recorded spans and events per camera, click to play (timeline.js); made at init. */
  timeline: null,
};

/** Redraws the timeline's strips for the cameras the grid shows. */
function refreshTimeline() {
  if (!page.rpc || !page.timeline) return;
  const cameras = [...page.tiles.keys()].map((device) => ({ device, name: cameraName(device) }));
  page.timeline.refresh(page.rpc, cameras).catch(handleAuthError);
}

const credential = () => sessionStorage.getItem(CREDENTIAL_KEY) ?? '';

/** The message to show for a failed call or fetch. */
function describe(e) {
  if (!(e instanceof RpcError)) return e?.message || String(e);
  const data = e.data ?? {};
  // -32050 names what failed and what it said.
  if (data.dependency) return data.detail ? `${data.dependency}: ${data.detail}` : `${data.dependency} failed`;
  return data.reason || data.hint || e.message;
}

// ---- formatting -------------------------------------------------------------------------------------------------

function formatBytes(n) {
  if (!Number.isFinite(n)) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

function formatDuration(s) {
  if (!Number.isFinite(s)) return '–';
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  const rest = Math.round(s % 60);
  return m < 60 ? `${m}:${String(rest).padStart(2, '0')}` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

const clockFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateFormat = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });

/** Today's times as a clock; older ones with their date. */
function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toDateString() === new Date().toDateString() ? clockFormat.format(d) : dateFormat.format(d);
}

/** A score of 0..1 as a whole percentage. */
const formatScore = (score) => `${Math.round(score * 100)}%`;

/**
 * The rectangle the picture fills inside `video` (`object-fit: contain` letterboxes it), in CSS pixels from the
 * element's top left corner; null while the video's size is unknown.
 */
function pictureRect(video) {
  const width = video.clientWidth;
  const height = video.clientHeight;
  if (!video.videoWidth || !video.videoHeight || !width || !height) return null;
  const scale = Math.min(width / video.videoWidth, height / video.videoHeight);
  const w = video.videoWidth * scale;
  const h = video.videoHeight * scale;
  return { left: (width - w) / 2, top: (height - h) / 2, width: w, height: h };
}

// ---- authenticated HTTP -------------------------------------------------------------------------------------------

/** GETs a camhub file with the credential in the Authorization header; resolves with a Blob. */
async function fetchFile(path) {
  const res = await fetch(path, {
    headers: { Authorization: `Bearer ${credential()}` },
    cache: 'no-store',
    credentials: 'omit',
  });
  if (!res.ok) {
    const text = (await res.text()).trim();
    throw new Error(`HTTP ${res.status}${text ? `: ${text.slice(0, 160)}` : ''}`);
  }
  return res.blob();
}

/**
 * The camera's WHEP endpoint, or null when camhub does not publish it over WebRTC (`streams.webrtc` empty). The page
 * and WHEP share camhub's listener, so a URL naming another origin (the listen address as camhub sees it) is taken
 * for its path on ours: the credential is sent only where the page came from.
 */
function whepUrl(summary) {
  return ourUrl(summary.streams?.webrtc);
}

/** The camera's LL-HLS playlist (`streams.hls`), on our origin as `whepUrl` does it; null when HLS is off. */
function hlsUrl(summary) {
  return ourUrl(summary.streams?.hls);
}

function ourUrl(advertised) {
  if (!advertised) return null;
  const url = new URL(advertised, window.location.href);
  return url.origin === window.location.origin ? url.href : new URL(url.pathname, window.location.href).href;
}

// ---- banner and connection state ----------------------------------------------------------------------------------

function showBanner(text) {
  const banner = $('banner');
  banner.textContent = text;
  banner.hidden = false;
}

function hideBanner() {
  $('banner').hidden = true;
}

function showLinkState({ state, retryInMs }) {
  const el = $('link-state');
  el.dataset.state = state;
  $('app-view').dataset.link = state;
  el.title = '';
  if (state === 'online') {
    $('link-text').textContent = 'Live';
    hideBanner();
  } else if (state === 'connecting') {
    $('link-text').textContent = 'Connecting…';
  } else if (retryInMs) {
    $('link-text').textContent = 'Reconnecting…';
    el.title = `Next attempt in ${Math.ceil(retryInMs / 1000)} s`;
    if (page.everOnline) showBanner('Lost the connection to camhub; reconnecting. Camera states may be out of date.');
  } else {
    $('link-text').textContent = 'Offline';
  }
}

// ---- one camera ---------------------------------------------------------------------------------------------------

class CameraTile {
  constructor(summary) {
    const el = $('camera-template').content.firstElementChild.cloneNode(true);
    this.el = el;
    this.device = summary.device;
    el.dataset.device = summary.device;
    this.name = el.querySelector('.camera-name');
    this.badge = el.querySelector('.badge');
    this.box = el.querySelector('.video-box');
    this.video = el.querySelector('video');
    this.overlay = el.querySelector('.overlay-text');
    this.resolution = el.querySelector('.resolution');
    this.fps = el.querySelector('.fps');
    this.latency = el.querySelector('.latency');
    this.latencyValue = el.querySelector('.latency-value');
    this.snapButton = el.querySelector('button.snapshot');
    this.thumb = el.querySelector('button.thumb');
    this.thumbImg = this.thumb.querySelector('img');
    this.error = el.querySelector('.camera-error');
    this.detections = el.querySelector('.detections');
    this.detectButton = el.querySelector('button.detect');
    this.detectText = this.detectButton.querySelector('.detect-text');
    const id = el.querySelector('.camera-id');
    id.textContent = summary.device;
    id.hidden = !summary.name || summary.name === summary.device;
    this.video.dataset.sessions = '0';

    this.status = null;
    /** The WHEP endpoint while camhub publishes the camera over WebRTC, else null. */
    this.whep = null;
    /** The HLS playlist while camhub publishes the camera over HLS, else null. */
    this.hls = null;
    /** How the tile plays: 'webrtc' first; 'hls' once WebRTC could not connect (until the page is reloaded). */
    this.transport = 'webrtc';
    this.session = null;
    /** Bumped whenever the video is started or stopped; a result for an older generation is ignored. */
    this.generation = 0;
    this.retries = 0;
    this.retryTimer = 0;
    this.peerTimer = 0;
    this.errorTimer = 0;
    this.snapshotUrl = null;
    this.snapshotName = '';
    /** Tracked objects on the video by track id: `{ box, label, timer }`, the timer removing a stale box. */
    this.tracks = new Map();
    /** This camera's entry of get_inference_status; null while detection is unknown or unavailable. */
    this.detection = null;
    /** Boxes follow the picture when the tile is resized; no per-frame work. */
    this.resizes = new ResizeObserver(() => this.placeDetections());
    this.resizes.observe(this.video);

    this.snapButton.addEventListener('click', () => this.takeSnapshot());
    this.thumb.addEventListener('click', () => openSnapshot(this.snapshotName, this.snapshotUrl));
    this.detectButton.addEventListener('click', () => this.toggleDetection());
    // The picture's size is known (or changed): the letterboxing moves.
    this.video.addEventListener('resize', () => this.placeDetections());
    this.update(summary);
  }

  update(summary) {
    this.name.textContent = summary.name || summary.device;
    this.name.title = summary.name || summary.device;
    this.badge.textContent = summary.status;
    this.badge.dataset.status = summary.status;
    const connected = summary.status === 'CONNECTED';
    this.resolution.textContent = summary.resolution || '–';
    this.fps.textContent = connected && summary.fps > 0 ? `${summary.fps} fps` : '– fps';
    const canSnapshot = SNAPSHOT_ROLES.has(page.role);
    this.snapButton.disabled = !connected || !canSnapshot || this.snapButton.dataset.busy === 'true';
    this.snapButton.title = canSnapshot ? '' : 'Snapshots need the operator role';

    // Video runs while the camera is connected and published; it starts again when either comes back.
    const first = this.status === null;
    const wasLive = this.status === 'CONNECTED' && this.playable();
    const previousWhep = this.whep;
    this.whep = whepUrl(summary);
    this.hls = hlsUrl(summary);
    this.status = summary.status;
    const live = connected && this.playable();
    if (live && (!wasLive || this.whep !== previousWhep)) {
      this.startVideo();
    } else if (!live && (wasLive || first)) {
      let reason = 'Camera disconnected';
      if (summary.status === 'ERROR') reason = 'Camera error; camhub keeps retrying';
      else if (connected) reason = 'Live video is not published for this camera';
      this.stopVideo(reason);
    }
  }

  /** Whether camhub publishes the camera over a protocol the tile plays. */
  playable() {
    return this.whep !== null || this.hls !== null;
  }

  setOverlay(text) {
    this.overlay.textContent = text;
    this.box.dataset.playing = 'false';
  }

  flashError(text) {
    this.error.textContent = text;
    this.error.hidden = false;
    clearTimeout(this.errorTimer);
    this.errorTimer = setTimeout(() => {
      this.error.hidden = true;
    }, 8000);
  }

  async startVideo() {
    const generation = ++this.generation;
    this.session?.stop();
    clearTimeout(this.retryTimer);
    clearTimeout(this.peerTimer);
    this.video.srcObject = null;
    if (this.whep === null || this.transport === 'hls') {
      this.startHls(generation);
      return;
    }
    this.video.dataset.transport = 'webrtc';
    this.setOverlay('Starting live video…');
    const session = new WhepSession(this.whep, credential(), (state) => this.onPeerState(generation, state));
    this.session = session;
    // Where HLS is there to fall back on, WebRTC gets a few seconds, not the session's whole 15 s.
    const fallback = this.hls === null ? 0 : setTimeout(() => {
      if (generation !== this.generation) return;
      this.generation += 1;
      this.videoFailed(`no video within ${WEBRTC_FALLBACK_MS / 1000} s`, 0);
    }, WEBRTC_FALLBACK_MS);
    try {
      const times = await session.start(this.video);
      clearTimeout(fallback);
      if (generation !== this.generation) return;
      this.retries = 0;
      const rounded = Math.round(times.firstFrame);
      // Read by the browser test (tests/browser/live_view.mjs); milliseconds from the WHEP POST.
      this.video.dataset.firstFrameMs = String(rounded);
      this.video.dataset.answerMs = String(Math.round(times.answer));
      this.video.dataset.connectedMs = String(Math.round(times.connected));
      this.video.dataset.sessions = String(Number(this.video.dataset.sessions) + 1);
      this.latencyValue.textContent = `first frame ${rounded} ms`;
      this.latency.hidden = false;
      this.box.dataset.playing = 'true';
    } catch (e) {
      clearTimeout(fallback);
      if (generation !== this.generation) return;
      this.videoFailed(describe(e), e instanceof WhepError ? e.status : 0);
    }
  }

  /** Plays the camera over LL-HLS: WebRTC is not published, or could not connect. */
  async startHls(generation) {
    this.video.dataset.transport = 'hls';
    this.setOverlay('Starting live video over HLS…');
    const device = this.device;
    const session = new HlsSession(this.hls, credential(), async () =>
      (await page.rpc.call('create_media_token', { device })).token);
    this.session = session;
    try {
      const firstFrame = await session.start(this.video);
      if (generation !== this.generation) return;
      this.retries = 0;
      this.video.dataset.firstFrameMs = String(Math.round(firstFrame));
      this.video.dataset.sessions = String(Number(this.video.dataset.sessions) + 1);
      this.latencyValue.textContent = `HLS, first frame ${Math.round(firstFrame)} ms`;
      this.latency.hidden = false;
      this.box.dataset.playing = 'true';
    } catch (e) {
      if (generation !== this.generation) return;
      this.videoFailed(describe(e), 0);
    }
  }

  videoFailed(reason, status) {
    this.session?.stop();
    this.session = null;
    this.video.srcObject = null;
    // WebRTC did not get through (a firewall, no UDP, a proxy): HLS goes over the page's own HTTP connection.
    if (this.transport === 'webrtc' && this.hls !== null && status !== 404 && status !== 401) {
      this.transport = 'hls';
      this.flashError(`WebRTC could not connect (${reason}); playing over HLS`);
      this.startVideo();
      return;
    }
    // 404: the camera was withdrawn or removed. Until the list says which (asked for now), the tile takes it as not
    // published, so the first refresh that shows it published again starts the video, however the two race.
    if (status === 404) {
      this.whep = null;
      this.hls = null;
      this.setOverlay('Live video is not published for this camera');
      queueCameraRefresh();
      return;
    }
    if (this.status !== 'CONNECTED' || !this.playable()) return;
    const delay = Math.min(VIDEO_RETRY_MAX_MS, VIDEO_RETRY_MIN_MS * 2 ** this.retries);
    this.retries += 1;
    this.setOverlay(`Live video unavailable (${reason}); retrying in ${Math.ceil(delay / 1000)} s`);
    if (status === 401) this.setOverlay(`Live video refused the credential; retrying in ${Math.ceil(delay / 1000)} s`);
    const generation = this.generation;
    this.retryTimer = setTimeout(() => {
      if (generation === this.generation && this.status === 'CONNECTED' && this.playable()) this.startVideo();
    }, delay);
  }

  onPeerState(generation, state) {
    if (generation !== this.generation) return;
    if (state === 'failed') {
      this.generation += 1;
      this.videoFailed('the connection failed', 0);
    } else if (state === 'disconnected') {
      clearTimeout(this.peerTimer);
      this.peerTimer = setTimeout(() => {
        if (generation === this.generation && this.session?.pc?.connectionState !== 'connected') {
          this.generation += 1;
          this.videoFailed('the connection dropped', 0);
        }
      }, PEER_GRACE_MS);
    } else if (state === 'connected') {
      clearTimeout(this.peerTimer);
    }
  }

  stopVideo(reason) {
    this.generation += 1;
    clearTimeout(this.retryTimer);
    clearTimeout(this.peerTimer);
    this.session?.stop();
    this.session = null;
    this.video.srcObject = null;
    this.setOverlay(reason);
  }

  async takeSnapshot() {
    this.snapButton.dataset.busy = 'true';
    this.snapButton.disabled = true;
    this.snapButton.textContent = 'Taking…';
    try {
      const result = await page.rpc.call('take_snapshot', { device: this.device });
      const blob = await fetchFile(result.download_url || result.file_path);
      if (this.snapshotUrl) URL.revokeObjectURL(this.snapshotUrl);
      this.snapshotUrl = URL.createObjectURL(blob);
      this.snapshotName = result.filename;
      this.thumbImg.src = this.snapshotUrl;
      this.thumb.hidden = false;
      this.thumb.title = `Open ${result.filename}`;
      openSnapshot(result.filename, this.snapshotUrl);
    } catch (e) {
      if (!handleAuthError(e)) this.flashError(`Snapshot failed: ${describe(e)}`);
    } finally {
      delete this.snapButton.dataset.busy;
      this.snapButton.textContent = 'Snapshot';
      this.snapButton.disabled = this.status !== 'CONNECTED' || !SNAPSHOT_ROLES.has(page.role);
    }
  }

  /** Draws, moves or removes a tracked object's box, from the `data` of a `detection` event. */
  showDetection(data) {
    if (data.type === 'end') {
      this.dropTrack(data.track_id);
      return;
    }
    let track = this.tracks.get(data.track_id);
    if (!track) {
      const box = document.createElement('div');
      box.className = 'detection';
      const label = document.createElement('span');
      label.className = 'detection-label';
      box.append(label);
      this.detections.append(box);
      track = { box, label, timer: 0 };
      this.tracks.set(data.track_id, track);
    }
    const [x1, y1, x2, y2] = data.box.map((v) => Math.min(1, Math.max(0, v)));
    // Custom properties through the CSSOM, which the page's style-src 'self' allows (a style attribute it would not).
    for (const [name, value] of Object.entries({ x1, y1, x2, y2 })) track.box.style.setProperty(`--${name}`, value);
    track.box.dataset.label = data.label;
    track.box.dataset.track = String(data.track_id);
    // Near the top of the picture the label goes inside the box, where it is not cut off.
    track.box.classList.toggle('at-top', y1 < 0.08);
    track.label.textContent = `${data.label} ${formatScore(data.score)}`;
    clearTimeout(track.timer);
    track.timer = setTimeout(() => this.dropTrack(data.track_id), DETECTION_STALE_MS);
    this.placeDetections();
  }

  dropTrack(trackId) {
    const track = this.tracks.get(trackId);
    if (!track) return;
    clearTimeout(track.timer);
    track.box.remove();
    this.tracks.delete(trackId);
    if (this.tracks.size === 0) this.detections.hidden = true;
  }

  /** Removes every box: after a reconnection the page may have missed their `end`. */
  clearDetections() {
    for (const trackId of [...this.tracks.keys()]) this.dropTrack(trackId);
  }

  /** Lays the box layer over the picture itself; the boxes inside it are fractions of it. */
  placeDetections() {
    const rect = this.tracks.size > 0 ? pictureRect(this.video) : null;
    this.detections.hidden = rect === null;
    if (rect === null) return;
    for (const [name, value] of Object.entries(rect)) this.detections.style.setProperty(`--pic-${name}`, `${value}px`);
  }

  /** Shows the camera's detection (an entry of get_inference_status, or null to hide the toggle). */
  setDetection(detection) {
    this.detection = detection;
    this.detectButton.hidden = detection === null;
    if (detection === null) return;
    const mode = detection.enabled ? detection.decode_mode : 'off';
    this.detectButton.dataset.mode = mode;
    this.detectButton.setAttribute('aria-pressed', String(detection.enabled));
    this.detectText.textContent = detection.enabled ? `Detect · ${DECODE_MODES[mode] ?? mode}` : 'Detect off';
    const canToggle = DETECTION_ROLES.has(page.role);
    this.detectButton.disabled = !canToggle || this.detectButton.dataset.busy === 'true';
    if (!canToggle) this.detectButton.title = 'Changing detection needs the operator role';
    else this.detectButton.title = detection.enabled ? 'Turn object detection off' : 'Turn object detection on';
  }

  async toggleDetection() {
    if (!this.detection) return;
    const enabled = !this.detection.enabled;
    this.detectButton.dataset.busy = 'true';
    this.detectButton.disabled = true;
    try {
      this.detection = await page.rpc.call('set_detection', { device: this.device, enabled });
    } catch (e) {
      // -32602 (parameters the camera cannot take) and -32050 (the runtime or model failed) say why in their data.
      if (!handleAuthError(e)) this.flashError(`Detection ${enabled ? 'on' : 'off'} failed: ${describe(e)}`);
    } finally {
      delete this.detectButton.dataset.busy;
      this.setDetection(this.detection);
    }
  }

  remove() {
    this.stopVideo('Removed');
    clearTimeout(this.errorTimer);
    this.clearDetections();
    this.resizes.disconnect();
    if (this.snapshotUrl) URL.revokeObjectURL(this.snapshotUrl);
    this.el.remove();
  }
}

function openSnapshot(name, url) {
  if (!url) return;
  $('snapshot-title').textContent = name;
  $('snapshot-large').src = url;
  const dialog = $('snapshot-dialog');
  if (!dialog.open) dialog.showModal();
}

// ---- cameras, detections and recordings ---------------------------------------------------------------------------

/** The camera list and, beside it, detection's status (each camera's toggle, whether the detections list can show). */
async function refreshCameras() {
  let list;
  let inference;
  try {
    [list, inference] = await Promise.all([page.rpc.call('get_camera_list'), inferenceStatus()]);
  } catch (e) {
    handleAuthError(e);
    return;
  }
  const grid = $('grid');
  const seen = new Set();
  for (const summary of list.cameras) {
    seen.add(summary.device);
    let tile = page.tiles.get(summary.device);
    if (tile) {
      tile.update(summary);
    } else {
      tile = new CameraTile(summary);
      page.tiles.set(summary.device, tile);
    }
    grid.append(tile.el); // keeps the server's order; moving an element in place does not reload its video
  }
  for (const [device, tile] of page.tiles) {
    if (!seen.has(device)) {
      tile.remove();
      page.tiles.delete(device);
    }
  }
  $('camera-count').textContent = `${list.connected} of ${list.total} connected`;
  $('no-cameras').hidden = list.total > 0;
  page.inference = inference;
  for (const [device, tile] of page.tiles) tile.setDetection(cameraDetection(inference, device));
  showEventsAvailability();
}

/** get_inference_status; a refusal reads as detection unavailable, with camhub's reason. */
async function inferenceStatus() {
  try {
    return await page.rpc.call('get_inference_status');
  } catch (e) {
    if (e instanceof RpcError && e.code !== AUTH_FAILED) return { available: false, reason: describe(e), cameras: [] };
    throw e;
  }
}

/** A camera's detection as its tile shows it: its entry in `status`, off without one, null when unavailable. */
function cameraDetection(status, device) {
  if (!status?.available) return null;
  return status.cameras?.find((c) => c.device === device) ?? { device, enabled: false, decode_mode: 'off' };
}

/** Coalesces refreshes asked for by a burst of notifications. */
function queueCameraRefresh() {
  if (page.refreshQueued) return;
  page.refreshQueued = true;
  setTimeout(() => {
    page.refreshQueued = false;
    if (page.rpc?.online) refreshCameras();
  }, 100);
}

/** Coalesces the refreshes of the detections list asked for by a burst of `new` and `end` events. */
function queueEventsRefresh() {
  if (page.eventsQueued) return;
  page.eventsQueued = true;
  setTimeout(() => {
    page.eventsQueued = false;
    if (page.rpc?.online) refreshEvents();
  }, 100);
}

async function refreshEvents() {
  const generation = ++page.eventsGeneration;
  let result;
  try {
    result = await page.rpc.call('list_events', { limit: EVENTS_LIMIT });
  } catch (e) {
    handleAuthError(e);
    return;
  }
  if (generation !== page.eventsGeneration) return;
  $('events').replaceChildren(...result.events.map(eventItem));
  forgetThumbnails(result.events);
  page.eventCount = result.events.length;
  showEventsAvailability();
}

/** The detections list, or instead of it why detection is unavailable. */
function showEventsAvailability() {
  const unavailable = page.inference !== null && !page.inference.available;
  const reason = $('events-unavailable');
  reason.hidden = !unavailable;
  if (unavailable) reason.textContent = `Detection is unavailable: ${page.inference.reason || 'camhub gave no reason'}`;
  $('events').hidden = unavailable;
  $('no-events').hidden = unavailable || page.eventCount !== 0;
}

const cameraName = (device) => page.tiles.get(device)?.name.textContent || device;

/** One detection: its picture, label and top score, when and where; a click opens the picture. */
function eventItem(event) {
  const li = document.createElement('li');
  li.dataset.event = String(event.id);
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'event';
  const img = document.createElement('img');
  img.className = 'event-thumb';
  img.alt = '';
  const what = document.createElement('span');
  what.className = 'event-what';
  what.textContent = `${event.label} ${formatScore(event.top_score)}`;
  const meta = document.createElement('span');
  meta.className = 'event-meta';
  const when = formatTime(event.started_at);
  meta.textContent = [when, cameraName(event.device), event.ended_at ? '' : 'in view'].filter(Boolean).join(' · ');
  button.append(img, what, meta);
  li.append(button);
  if (!event.snapshot_url) {
    button.disabled = true;
    button.title = 'No picture of this detection';
    return li;
  }
  button.title = 'Open the picture';
  thumbnail(event).then(
    (url) => {
      img.src = url;
    },
    (e) => {
      li.dataset.thumbnail = 'failed';
      button.title = `The picture did not load: ${describe(e)}`;
    },
  );
  button.addEventListener('click', () => {
    if (img.getAttribute('src')) openSnapshot(`${event.label} on ${cameraName(event.device)}, ${when}`, img.src);
  });
  return li;
}

/** A detection's picture is replaced by a better one as its top score rises. */
const thumbnailKey = (event) => `${event.snapshot_url} ${event.top_score}`;

/** The detection's picture as a blob URL (fetched with the credential in a header), fetched once per picture. */
function thumbnail(event) {
  const key = thumbnailKey(event);
  let url = page.thumbnails.get(key);
  if (!url) {
    url = fetchFile(event.snapshot_url).then((blob) => URL.createObjectURL(blob));
    page.thumbnails.set(key, url);
    // A failed picture is fetched again on the next refresh.
    url.catch(() => {
      if (page.thumbnails.get(key) === url) page.thumbnails.delete(key);
    });
  }
  return url;
}

/** Revokes the blob URLs of pictures no longer in `events`. */
function forgetThumbnails(events) {
  const keep = new Set(events.map(thumbnailKey));
  for (const [key, url] of page.thumbnails) {
    if (keep.has(key)) continue;
    page.thumbnails.delete(key);
    url.then((u) => URL.revokeObjectURL(u), () => {});
  }
}

async function refreshRecordings() {
  let result;
  try {
    result = await page.rpc.call('list_recordings', { limit: 50 });
  } catch (e) {
    handleAuthError(e);
    return;
  }
  const items = result.files.map((file) => {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'rec-name';
    name.textContent = file.filename;
    name.title = file.filename;
    const meta = document.createElement('span');
    meta.className = 'rec-meta';
    // The name starts with the camera's id, so the line says only what the name does not.
    meta.textContent = [formatDuration(file.duration), formatBytes(file.file_size), formatTime(file.modified_time)]
      .filter(Boolean)
      .join(' · ');
    const link = document.createElement('a');
    link.className = 'download';
    link.href = '#';
    link.textContent = 'Download';
    link.dataset.filename = file.filename;
    link.addEventListener('click', (ev) => {
      ev.preventDefault();
      download(file, link);
    });
    li.append(name, link, meta);
    return li;
  });
  $('recordings').replaceChildren(...items);
  $('no-recordings').hidden = items.length > 0;
}

/** Downloads need the credential in a header, so the file is fetched here and saved from a blob URL. */
async function download(file, link) {
  if (link.getAttribute('aria-busy') === 'true') return;
  link.setAttribute('aria-busy', 'true');
  link.textContent = 'Downloading…';
  try {
    const blob = await fetchFile(file.download_url);
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = file.filename;
    a.hidden = true;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (e) {
    showBanner(`Download of ${file.filename} failed: ${describe(e)}`);
  } finally {
    link.removeAttribute('aria-busy');
    link.textContent = 'Download';
  }
}

// ---- stream keys (operators) --------------------------------------------------------------------------------------

/** The add-cameras section is for roles that may call its methods; for others it stays hidden and is never loaded. */
function showSources() {
  const allowed = SOURCE_ROLES.has(page.role);
  $('sources').hidden = !allowed;
  if (allowed) refreshKeys();
}

function showKeysError(text) {
  const el = $('keys-error');
  el.textContent = text;
  el.hidden = !text;
}

/** One pushed camera in the stream keys list; updated in place, so a revoke waiting for its confirmation survives. */
class KeyRow {
  constructor(key) {
    this.device = key.device;
    this.tr = document.createElement('tr');
    this.tr.dataset.device = key.device;
    const camera = document.createElement('td');
    this.name = document.createElement('span');
    this.name.className = 'key-name';
    const id = document.createElement('span');
    id.className = 'key-id muted';
    id.textContent = key.device;
    this.note = document.createElement('span');
    this.note.className = 'row-note';
    this.note.hidden = true;
    camera.append(this.name, id, this.note);
    const prefix = document.createElement('td');
    const code = document.createElement('code');
    code.className = 'key-prefix';
    code.textContent = `${key.key_prefix}…`;
    code.title = 'The key\'s first characters; the whole key was shown once, when it was made';
    prefix.append(code);
    this.state = document.createElement('td');
    this.state.className = 'key-state';
    this.origin = document.createElement('td');
    this.origin.className = 'key-origin';
    this.actions = document.createElement('td');
    this.actions.className = 'key-actions';
    this.confirmTimer = 0;
    this.tr.append(camera, prefix, this.state, this.origin, this.actions);
    this.originValue = null;
    this.update(key);
  }

  update(key) {
    this.name.textContent = key.name || key.device;
    this.state.dataset.publishing = String(key.publishing);
    if (key.publishing) this.state.textContent = `publishing ${key.protocol ?? ''}`.trim();
    else this.state.textContent = key.protocol ? `not publishing (last ${key.protocol})` : 'not publishing yet';
    if (key.origin === this.originValue) return;
    this.originValue = key.origin;
    this.origin.textContent = key.origin === 'config' ? 'config file' : 'API';
    this.cancelRevoke();
    if (key.origin === 'config') {
      const fixed = document.createElement('span');
      fixed.className = 'muted';
      fixed.textContent = 'revoke in config';
      fixed.title = 'This key comes from the config file (stream_key_sha256): remove it there to revoke it';
      this.actions.replaceChildren(fixed);
    } else {
      this.actions.replaceChildren(this.button('Revoke', 'ghost small revoke', () => this.askRevoke()));
    }
  }

  button(text, className, onClick) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = className;
    b.textContent = text;
    b.addEventListener('click', onClick);
    return b;
  }

  /** The first click asks; revoking drops the publisher and removes the camera, which cannot be undone. */
  askRevoke() {
    const confirm = this.button('Revoke key', 'danger small confirm-revoke', () => this.revoke());
    const cancel = this.button('Cancel', 'ghost small', () => this.cancelRevoke());
    this.actions.replaceChildren(confirm, cancel);
    this.note.textContent = 'Revoking drops its publisher and removes the camera; its recordings are kept.';
    this.note.hidden = false;
    this.tr.classList.add('confirming');
    clearTimeout(this.confirmTimer);
    this.confirmTimer = setTimeout(() => this.cancelRevoke(), REVOKE_CONFIRM_MS);
    cancel.focus();
  }

  cancelRevoke() {
    clearTimeout(this.confirmTimer);
    if (!this.tr.classList.contains('confirming')) return;
    this.tr.classList.remove('confirming');
    this.note.hidden = true;
    this.actions.replaceChildren(this.button('Revoke', 'ghost small revoke', () => this.askRevoke()));
  }

  async revoke() {
    clearTimeout(this.confirmTimer);
    for (const b of this.actions.querySelectorAll('button')) b.disabled = true;
    this.actions.querySelector('.confirm-revoke').textContent = 'Revoking…';
    try {
      await page.rpc.call('revoke_stream_key', { device: this.device });
      showKeysError('');
      this.remove();
      queueCameraRefresh();
      queueKeysRefresh();
    } catch (e) {
      if (handleAuthError(e)) return;
      showKeysError(`${this.device} was not revoked: ${describe(e)}`);
      this.cancelRevoke(); // puts the Revoke button back
    }
  }

  remove() {
    clearTimeout(this.confirmTimer);
    this.tr.remove();
    if (page.keyRows.get(this.device) === this) page.keyRows.delete(this.device);
    showKeysListed();
  }
}

/** The keys table while there are keys, else (once the list has loaded) a line saying there are none. */
function showKeysListed(loaded = true) {
  $('keys-wrap').hidden = page.keyRows.size === 0;
  $('no-keys').hidden = !loaded || page.keyRows.size > 0;
}

async function refreshKeys() {
  if (!SOURCE_ROLES.has(page.role) || !page.rpc) return;
  const generation = ++page.keysGeneration;
  let result;
  try {
    result = await page.rpc.call('list_stream_keys');
  } catch (e) {
    if (!handleAuthError(e) && generation === page.keysGeneration) {
      showKeysError(`The stream keys did not load: ${describe(e)}`);
    }
    return;
  }
  if (generation !== page.keysGeneration) return;
  showKeysError('');
  const body = $('keys');
  const seen = new Set();
  for (const key of result.keys) {
    seen.add(key.device);
    let row = page.keyRows.get(key.device);
    if (row) row.update(key);
    else {
      row = new KeyRow(key);
      page.keyRows.set(key.device, row);
    }
    body.append(row.tr); // the server's order; moving a row keeps a pending confirmation
  }
  for (const [device, row] of page.keyRows) if (!seen.has(device)) row.remove();
  showKeysListed();
}

/** Coalesces the refreshes of the stream keys asked for by a burst of status changes. */
function queueKeysRefresh() {
  if (page.keysQueued) return;
  page.keysQueued = true;
  setTimeout(() => {
    page.keysQueued = false;
    if (page.rpc?.online) refreshKeys();
  }, 150);
}

async function createKey(ev) {
  ev.preventDefault();
  const input = $('key-name');
  const name = input.value.trim();
  if (!name) return;
  const button = $('key-create');
  button.disabled = true;
  button.textContent = 'Creating…';
  try {
    showSecret(await page.rpc.call('create_stream_key', { name }));
    input.value = '';
    showKeysError('');
    queueKeysRefresh();
    queueCameraRefresh();
  } catch (e) {
    if (!handleAuthError(e)) showKeysError(`No key was made: ${describe(e)}`);
  } finally {
    button.disabled = false;
    button.textContent = 'Create key';
  }
}

/**
 * The one-time box: the new key and where to publish with it, each with a copy button. The values live only in this
 * box's text (the copy buttons read it when clicked), so closing the box takes them out of the page.
 */
function showSecret(created) {
  hideSecret();
  $('key-secret-title').textContent = `Stream key for ${created.name} (${created.device})`;
  const fields = [
    ['Stream key', 'stream_key', created.stream_key],
    ['RTMP URL', 'rtmp_url', created.rtmp_url],
    ['SRT URL', 'srt_url', created.srt_url],
    ['WHIP URL', 'whip_url', created.whip_url],
  ];
  const list = $('key-secret-fields');
  for (const [label, field, value] of fields) {
    if (!value) continue; // a protocol camhub does not listen on
    const dt = document.createElement('dt');
    dt.textContent = label;
    const dd = document.createElement('dd');
    const code = document.createElement('code');
    code.className = 'secret-value';
    code.dataset.field = field;
    code.textContent = value;
    const copy = document.createElement('button');
    copy.type = 'button';
    copy.className = 'ghost small copy';
    copy.textContent = 'Copy';
    copy.setAttribute('aria-label', `Copy the ${label}`);
    copy.addEventListener('click', () => copyText(code, copy));
    dd.append(code, copy);
    list.append(dt, dd);
  }
  const box = $('key-secret');
  box.hidden = false;
  box.scrollIntoView({ block: 'nearest' });
  box.focus({ preventScroll: true });
}

function hideSecret() {
  $('key-secret-fields').replaceChildren();
  $('key-secret-title').textContent = '';
  $('key-secret').hidden = true;
  window.getSelection()?.removeAllRanges(); // a selected key would linger in the selection
}

/** Copies `el`'s text: the Clipboard API where the page is a secure context, else the selection and execCommand. */
async function copyText(el, button) {
  let copied = false;
  try {
    if (window.isSecureContext && navigator.clipboard) {
      await navigator.clipboard.writeText(el.textContent);
      copied = true;
    }
  } catch {
    copied = false;
  }
  const selection = window.getSelection();
  if (!copied) {
    const range = document.createRange();
    range.selectNodeContents(el);
    selection.removeAllRanges();
    selection.addRange(range);
    try {
      copied = document.execCommand('copy');
    } catch {
      copied = false;
    }
  }
  // Left selected when nothing could copy it, for the user's own Ctrl+C.
  if (copied) selection.removeAllRanges();
  button.textContent = copied ? 'Copied' : 'Press Ctrl+C';
  setTimeout(() => {
    button.textContent = 'Copy';
  }, 2000);
}

// ---- network discovery (operators) --------------------------------------------------------------------------------

function showScanError(text) {
  const el = $('scan-error');
  el.textContent = text;
  el.hidden = !text;
}

/**
 * `found` (a discovered URL, never with credentials) with the scan's user name and password in it, percent-encoded by
 * the URL parser. `%` is not in the userinfo set the parser encodes, so it is encoded first: a password with `%41` in
 * it means those three characters, not `A`.
 */
function withCredentials(found, credentials) {
  if (!credentials) return found;
  const url = new URL(found);
  if (!url.host) throw new Error('camhub found a URL without a host');
  url.username = credentials.username.replaceAll('%', '%25');
  url.password = credentials.password.replaceAll('%', '%25');
  return url.href;
}

function endScan() {
  clearInterval(page.scanTimer);
  page.scanTimer = 0;
  $('scan-button').disabled = false;
  $('scan-button').textContent = 'Scan';
}

async function scan(ev) {
  ev.preventDefault();
  if (page.scanTimer) return;
  const hosts = $('scan-hosts').value.split(/[\s,]+/).filter(Boolean);
  const username = $('scan-username').value.trim();
  const password = $('scan-password').value;
  const timeoutMs = Number($('scan-timeout').value);
  if (hosts.length > SCAN_MAX_HOSTS) {
    showScanError(`Name at most ${SCAN_MAX_HOSTS} hosts (${hosts.length} given).`);
    return;
  }
  if (password && !username) {
    showScanError('A password needs a user name.');
    return;
  }
  const params = { timeout_ms: timeoutMs };
  if (hosts.length) params.hosts = hosts;
  // Kept with this scan's results (in memory only) for their Add buttons: the credentials the streams were found with.
  const credentials = username ? { username, password } : null;
  if (credentials) Object.assign(params, credentials);
  const generation = ++page.scanGeneration;
  showScanError('');
  const button = $('scan-button');
  button.disabled = true;
  button.textContent = 'Scanning…';
  const state = $('scan-state');
  const started = performance.now();
  const tick = () => {
    state.textContent = `Scanning… ${((performance.now() - started) / 1000).toFixed(1)} s`;
  };
  tick();
  page.scanTimer = setInterval(tick, 100);
  try {
    const result = await page.rpc.call('discover_external_streams', params, 2 * timeoutMs + SCAN_SLACK_MS);
    if (generation !== page.scanGeneration) return;
    endScan();
    showScanResult(result, credentials);
  } catch (e) {
    if (generation !== page.scanGeneration) return;
    endScan();
    state.textContent = '';
    if (!handleAuthError(e)) showScanError(`The scan failed: ${describe(e)}`);
  }
}

/** What a scan found, in a line: its streams and devices, or camhub's word on why nothing was scanned. */
function scanSummary(result) {
  const streams = result.total_found;
  const devices = result.devices ?? [];
  if (streams === 0 && devices.length === 0) return result.message || 'Nothing found';
  const answered = devices.filter((d) => d.status === 'OK').length;
  const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
  return `Found ${plural(streams, 'stream')} on ${answered} of ${plural(devices.length, 'device')}`;
}

function showScanResult(result, credentials) {
  const seconds = (result.scan_duration_ms / 1000).toFixed(1);
  $('scan-state').textContent = `${scanSummary(result)} · ${seconds} s`;

  // How asking each device went, where it did not go well, and the problems no device accounts for.
  const problems = [];
  const prefixes = [];
  for (const device of result.devices ?? []) {
    prefixes.push(`${device.address} (${device.source}): `);
    if (device.status === 'OK') continue;
    const li = document.createElement('li');
    const where = document.createElement('strong');
    where.textContent = device.name && device.name !== device.address ? `${device.name} (${device.address})` : device.address;
    const status = document.createElement('span');
    status.className = 'device-status';
    status.dataset.status = device.status;
    status.textContent = DEVICE_STATUS[device.status] ?? device.status;
    li.append(where, status);
    if (device.error) {
      const detail = document.createElement('span');
      detail.className = 'muted';
      detail.textContent = device.error;
      li.append(detail);
    }
    problems.push(li);
  }
  for (const error of result.errors ?? []) {
    if (prefixes.some((p) => error.startsWith(p))) continue;
    const li = document.createElement('li');
    li.textContent = error;
    problems.push(li);
  }
  $('scan-problems').replaceChildren(...problems);
  $('scan-problems').hidden = problems.length === 0;

  const rows = result.discovered_streams.map((stream) => scanRow(stream, credentials));
  $('scan-results').replaceChildren(...rows);
  $('scan-results-wrap').hidden = rows.length === 0;
  $('no-streams').hidden = rows.length > 0;
}

/** One stream found: its name (editable until it is added), URL as found, codec and size, and Add or its camera. */
function scanRow(stream, credentials) {
  const tr = document.createElement('tr');
  tr.dataset.url = stream.url;
  const nameCell = document.createElement('td');
  nameCell.className = 'scan-name';
  const source = document.createElement('span');
  source.className = 'muted scan-source';
  source.textContent = stream.source === 'onvif' ? `ONVIF${stream.profile ? ` · ${stream.profile}` : ''}` : 'RTSP probe';
  const url = document.createElement('td');
  const code = document.createElement('code');
  code.className = 'scan-url';
  code.textContent = stream.url;
  url.append(code);
  const codec = document.createElement('td');
  codec.textContent = stream.codec ?? '–';
  if (stream.codec === 'H265') codec.title = 'Browsers do not play H.265 over WebRTC: watch it over RTSP';
  const size = document.createElement('td');
  size.className = 'scan-size';
  size.textContent = stream.width && stream.height ? `${stream.width}x${stream.height}` : '–';
  const action = document.createElement('td');
  action.className = 'scan-action';
  tr.append(nameCell, url, codec, size, action);

  const added = (device) => {
    const name = document.createElement('span');
    name.className = 'scan-found-name';
    name.textContent = stream.name;
    nameCell.replaceChildren(name, source);
    const text = document.createElement('span');
    text.className = 'added';
    text.append('added as ');
    const id = document.createElement('code');
    id.textContent = device;
    text.append(id);
    action.replaceChildren(text);
    tr.dataset.device = device;
  };
  if (stream.already_added) {
    added(stream.device ?? '?');
    return tr;
  }

  const input = document.createElement('input');
  input.className = 'add-name';
  input.value = stream.name;
  input.maxLength = 128;
  input.spellcheck = false;
  input.setAttribute('aria-label', `Name for the camera at ${stream.url}`);
  const error = document.createElement('span');
  error.className = 'error row-error';
  error.hidden = true;
  nameCell.append(input, source, error);
  const add = document.createElement('button');
  add.type = 'button';
  add.className = 'small add';
  add.textContent = 'Add';
  action.append(add);
  add.addEventListener('click', async () => {
    const name = input.value.trim();
    error.hidden = true;
    if (!name) {
      error.textContent = 'Give the camera a name.';
      error.hidden = false;
      return;
    }
    let streamUrl;
    try {
      streamUrl = withCredentials(stream.url, credentials);
    } catch (e) {
      error.textContent = `Cannot add it: ${describe(e)}`;
      error.hidden = false;
      return;
    }
    add.disabled = true;
    input.disabled = true;
    add.textContent = 'Adding…';
    try {
      const camera = await page.rpc.call('add_external_stream', { stream_url: streamUrl, stream_name: name });
      added(camera.device);
      queueCameraRefresh();
    } catch (e) {
      if (handleAuthError(e)) return;
      // camhub's errors never carry the URL's credentials.
      error.textContent = `Not added: ${describe(e)}`;
      error.hidden = false;
      add.disabled = false;
      input.disabled = false;
      add.textContent = 'Add';
    }
  });
  return tr;
}

/** Forgets every key, scan and password the add-cameras section holds. */
function resetSources() {
  $('sources').hidden = true;
  for (const row of [...page.keyRows.values()]) row.remove();
  showKeysListed(false);
  page.keysGeneration += 1;
  hideSecret();
  showKeysError('');
  $('key-name').value = '';
  page.scanGeneration += 1; // a scan still on its way is not shown
  endScan();
  $('scan-form').reset();
  $('scan-state').textContent = '';
  showScanError('');
  $('scan-problems').replaceChildren();
  $('scan-problems').hidden = true;
  $('scan-results').replaceChildren();
  $('scan-results-wrap').hidden = true;
  $('no-streams').hidden = true;
}

function toggleSources() {
  const button = $('toggle-sources');
  const open = button.getAttribute('aria-expanded') !== 'true';
  button.setAttribute('aria-expanded', String(open));
  button.textContent = open ? 'Hide' : 'Show';
  $('sources-body').hidden = !open;
}

function onNotification({ method, params }) {
  if (method === 'camera_status_update') {
    // A pushed camera's status follows its publisher: the keys list says who publishes.
    if (page.keyRows.has(params.device)) queueKeysRefresh();
    const tile = page.tiles.get(params.device);
    if (tile) {
      tile.update(params);
      const tiles = [...page.tiles.values()];
      const connected = tiles.filter((t) => t.status === 'CONNECTED').length;
      $('camera-count').textContent = `${connected} of ${tiles.length} connected`;
    } else {
      queueCameraRefresh();
    }
  } else if (method === 'recording_status_update') {
    if (params.status !== 'STARTED') refreshRecordings();
  } else if (method === 'event' && (params.topic === 'camera.added' || params.topic === 'camera.removed')) {
    queueCameraRefresh();
    if (SOURCE_ROLES.has(page.role)) queueKeysRefresh();
  } else if (method === 'event' && params.topic === 'detection') {
    page.tiles.get(params.device)?.showDetection(params.data);
    if (params.data.type === 'new' || params.data.type === 'end') queueEventsRefresh();
  }
}

// ---- session ------------------------------------------------------------------------------------------------------

/** An expired or revoked credential seen on any call ends the session. Returns whether `e` was that. */
function handleAuthError(e) {
  if (e instanceof RpcError && e.code === AUTH_FAILED) {
    signOut(`Your session ended (${describe(e)}). Sign in again.`);
    return true;
  }
  return false;
}

function startSession() {
  const rpc = new RpcClient(`${window.location.protocol === 'https:' ? 'wss' : 'ws'}://${window.location.host}/ws`, credential);
  page.rpc = rpc;
  rpc.addEventListener('state', (ev) => showLinkState(ev.detail));
  rpc.addEventListener('notification', (ev) => onNotification(ev.detail));
  rpc.addEventListener('auth-failed', (ev) => {
    signOut(page.everOnline ? `camhub no longer accepts this credential (${describe(ev.detail)}).` : `Sign-in failed: ${describe(ev.detail)}`);
  });
  rpc.addEventListener('authenticated', (ev) => {
    page.everOnline = true;
    page.role = ev.detail.role;
    $('role').textContent = ev.detail.role;
    $('signin-view').hidden = true;
    $('session').hidden = false;
    $('app-view').hidden = false;
    $('signin-button').disabled = false;
    rpc.call('subscribe_events', { topics: ['camera.added', 'camera.removed', 'detection'] }).catch(() => {});
    // Ends sent while the page was not connected are lost; boxes come back with their objects' next events.
    for (const tile of page.tiles.values()) tile.clearDetections();
    refreshCameras().then(refreshTimeline);
    refreshEvents();
    refreshRecordings();
    showSources();
  });
  rpc.start();
  page.timers.push(
    setInterval(() => {
      if (rpc.online && document.visibilityState === 'visible') refreshCameras();
    }, CAMERA_REFRESH_MS),
    setInterval(() => {
      if (rpc.online && document.visibilityState === 'visible') refreshRecordings();
    }, RECORDING_REFRESH_MS),
    setInterval(() => {
      if (rpc.online && document.visibilityState === 'visible') refreshTimeline();
    }, RECORDING_REFRESH_MS),
    setInterval(() => {
      if (rpc.online && document.visibilityState === 'visible') refreshEvents();
    }, EVENTS_REFRESH_MS),
    setInterval(() => {
      if (rpc.online && document.visibilityState === 'visible' && !$('sources').hidden) refreshKeys();
    }, KEYS_REFRESH_MS),
  );
}

function stopVideos() {
  for (const tile of page.tiles.values()) tile.stopVideo('Stopped');
}

function signOut(message) {
  sessionStorage.removeItem(CREDENTIAL_KEY);
  page.rpc?.stop();
  page.rpc = null;
  page.timers.forEach(clearInterval);
  page.timers = [];
  for (const tile of page.tiles.values()) tile.remove();
  page.tiles.clear();
  page.timeline?.clear();
  $('recordings').replaceChildren();
  $('events').replaceChildren();
  page.eventsGeneration += 1; // a list still on its way is not shown
  forgetThumbnails([]);
  page.inference = null;
  page.eventCount = null;
  showEventsAvailability();
  resetSources();
  page.role = null;
  page.everOnline = false;
  hideBanner();
  showSignIn(message);
}

function showSignIn(message) {
  $('app-view').hidden = true;
  $('session').hidden = true;
  $('signin-view').hidden = false;
  $('signin-button').disabled = false;
  $('signin-button').textContent = 'Sign in';
  const error = $('signin-error');
  error.textContent = message || '';
  error.hidden = !message;
  $('credential').focus();
}

function init() {
  $('signin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = $('credential').value.trim();
    if (!value) return;
    sessionStorage.setItem(CREDENTIAL_KEY, value);
    $('credential').value = '';
    $('signin-error').hidden = true;
    $('signin-button').disabled = true;
    $('signin-button').textContent = 'Signing in…';
    startSession();
  });
  $('sign-out').addEventListener('click', () => signOut(''));
  $('refresh-recordings').addEventListener('click', () => refreshRecordings());
  $('refresh-events').addEventListener('click', () => refreshEvents());
  page.timeline = new Timeline($('timelines'), {
    box: $('playback'),
    video: $('playback-video'),
    title: $('playback-title'),
    status: $('playback-status'),
    close: $('playback-close'),
  });
  $('refresh-timeline').addEventListener('click', refreshTimeline);
  $('refresh-keys').addEventListener('click', () => refreshKeys());
  $('toggle-sources').addEventListener('click', toggleSources);
  $('key-form').addEventListener('submit', createKey);
  $('key-secret-done').addEventListener('click', () => {
    hideSecret();
    $('key-name').focus();
  });
  $('scan-form').addEventListener('submit', scan);
  $('snapshot-dialog').addEventListener('close', () => {
    $('snapshot-large').removeAttribute('src');
  });
  // End WHEP sessions when the page goes away (DELETE with keepalive outlives the page).
  window.addEventListener('pagehide', stopVideos);
  window.addEventListener('pageshow', (ev) => {
    if (!ev.persisted) return;
    for (const tile of page.tiles.values()) if (tile.status === 'CONNECTED' && tile.playable()) tile.startVideo();
  });
  if (credential()) startSession();
  else showSignIn('');
}

init();
