// The timeline: per camera, the recorded spans of the last hours (`list_recording_spans`) and the detection events in
// them (`list_events`) on one strip; a click plays the recordings from that moment through `/playback/<id>` in a
// <video>, with a media token (`create_media_token`) in the URL, since a video element cannot send a header. The
// file's timeline is the wall clock from its first frame, so a marker follows the playing moment; at the end of a
// stretch the next one is loaded. Nothing here holds or shows the signed-in credential.

/** How far back the strips reach. */
const WINDOW_MS = 3 * 3600 * 1000;
/** How long each playback request asks for: short enough to start quickly, long enough to watch. */
const CHUNK_S = 300;
const EVENTS_LIMIT = 200;

const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

export class Timeline {
  /**
   * @param {HTMLElement} root where the strips go
   * @param {{video: HTMLVideoElement, box: HTMLElement, title: HTMLElement, status: HTMLElement, close: HTMLElement}} player
   */
  constructor(root, player) {
    this.root = root;
    this.player = player;
    this.rpc = null;
    this.rows = new Map();
    this.range = { from: 0, to: 1 };
    /** What plays: device, the wall-clock start asked for, the chunk's start; null when nothing does. */
    this.playing = null;
    this.generation = 0;
    player.close.addEventListener('click', () => this.stop());
    player.video.addEventListener('timeupdate', () => this.showPlayhead());
    player.video.addEventListener('ended', () => this.next());
    player.video.addEventListener('error', () => {
      if (this.playing) player.status.textContent = 'Nothing recorded from then on, or it cannot be played';
    });
  }

  /** Redraws every camera's strip (names from `cameras`: [{device, name}]). */
  async refresh(rpc, cameras) {
    this.rpc = rpc;
    const generation = ++this.generation;
    const to = Date.now();
    const from = to - WINDOW_MS;
    const since = new Date(from).toISOString();
    const rows = await Promise.all(
      cameras.map(async ({ device, name }) => {
        const [spans, events] = await Promise.all([
          rpc.call('list_recording_spans', { device, since }).catch(() => null),
          rpc.call('list_events', { device, since, limit: EVENTS_LIMIT }).catch(() => null),
        ]);
        return { device, name, spans: spans?.spans ?? [], events: events?.events ?? [] };
      }),
    );
    if (generation !== this.generation) return;
    this.range = { from, to };
    const seen = new Set();
    for (const row of rows) {
      seen.add(row.device);
      this.draw(row);
    }
    for (const [device, r] of this.rows) {
      if (!seen.has(device)) {
        r.el.remove();
        this.rows.delete(device);
      }
    }
    this.showPlayhead();
  }

  /** One camera's strip. */
  draw({ device, name, spans, events }) {
    let row = this.rows.get(device);
    if (!row) {
      const e = el('div', 'tl-row');
      e.dataset.device = device;
      const label = el('span', 'tl-name');
      const track = el('div', 'tl-track');
      track.setAttribute('role', 'button');
      track.tabIndex = 0;
      track.addEventListener('click', (ev) => {
        const box = track.getBoundingClientRect();
        const at = this.range.from + ((ev.clientX - box.left) / box.width) * (this.range.to - this.range.from);
        this.play(device, at);
      });
      const playhead = el('div', 'tl-playhead');
      playhead.hidden = true;
      e.append(label, track);
      row = { el: e, label, track, playhead };
      this.rows.set(device, row);
    }
    this.root.append(row.el);
    row.label.textContent = name || device;
    row.label.title = device;
    const pos = (t) => ((t - this.range.from) / (this.range.to - this.range.from)) * 100;
    const parts = [];
    for (const s of spans) {
      const a = Math.max(0, pos(Date.parse(s.start)));
      const b = Math.min(100, pos(Date.parse(s.end)));
      if (b <= a) continue;
      const span = el('div', 'tl-span');
      span.style.left = `${a}%`;
      span.style.width = `${Math.max(b - a, 0.2)}%`;
      span.title = `Recorded ${clock.format(new Date(s.start))} – ${clock.format(new Date(s.end))}`;
      parts.push(span);
    }
    for (const ev of events) {
      const x = pos(Date.parse(ev.started_at));
      if (x < 0 || x > 100) continue;
      const mark = el('div', 'tl-event');
      mark.style.left = `${x}%`;
      mark.title = `${ev.label} at ${clock.format(new Date(ev.started_at))}`;
      parts.push(mark);
    }
    row.track.replaceChildren(...parts, row.playhead);
    row.track.title = spans.length ? 'Click to play from that moment' : 'Nothing recorded in the last hours';
    row.el.classList.toggle('tl-empty', spans.length === 0);
  }

  /** Plays `device`'s recordings from `at` (ms since the epoch). */
  async play(device, at) {
    this.playing = { device, at, chunk: at };
    this.player.box.hidden = false;
    const name = this.rows.get(device)?.label.textContent ?? device;
    this.player.title.textContent = `${name} from ${clock.format(new Date(at))}`;
    await this.load();
  }

  async load() {
    const p = this.playing;
    if (!p || !this.rpc) return;
    const { video, status } = this.player;
    status.textContent = 'Loading…';
    let token;
    try {
      token = (await this.rpc.call('create_media_token', { device: p.device })).token;
    } catch (e) {
      status.textContent = `Cannot play: ${e.message ?? e}`;
      return;
    }
    if (this.playing !== p) return;
    const query = new URLSearchParams({ start: new Date(p.chunk).toISOString(), duration: String(CHUNK_S), token });
    video.muted = true;
    video.src = `/playback/${encodeURIComponent(p.device)}?${query}`;
    try {
      await video.play();
      status.textContent = '';
    } catch (e) {
      if (this.playing === p && video.error) status.textContent = 'Nothing recorded from then on';
    }
  }

  /** The next stretch after one ended, while it is in the past. */
  next() {
    const p = this.playing;
    if (!p) return;
    p.chunk += CHUNK_S * 1000;
    if (p.chunk >= Date.now()) {
      this.player.status.textContent = 'Played up to what is recorded';
      return;
    }
    this.load();
  }

  /** The playing moment on its strip (the chunk's start plus the video's time: files keep the wall clock). */
  showPlayhead() {
    for (const [device, row] of this.rows) {
      const p = this.playing;
      const on = p && p.device === device && this.player.video.currentTime > 0;
      row.playhead.hidden = !on;
      if (!on) continue;
      const t = p.chunk + this.player.video.currentTime * 1000;
      row.playhead.style.left = `${((t - this.range.from) / (this.range.to - this.range.from)) * 100}%`;
    }
  }

  stop() {
    this.playing = null;
    const { video, box, status } = this.player;
    video.pause();
    video.removeAttribute('src');
    video.load();
    status.textContent = '';
    box.hidden = true;
    this.showPlayhead();
  }

  /** Forgets everything (sign-out). */
  clear() {
    this.stop();
    this.generation += 1;
    this.rpc = null;
    for (const r of this.rows.values()) r.el.remove();
    this.rows.clear();
  }
}
