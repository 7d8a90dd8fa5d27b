// Low-latency HLS playback, the page's fallback when WebRTC cannot connect: hls.js (served by camhub at
// /assets/hls.js when installed) with the credential in an Authorization header, or else the browser's own HLS
// (Safari) with a short-lived media token in the URL (create_media_token), never the credential itself.

const FIRST_FRAME_TIMEOUT_MS = 20000;

let loading = null;

/** Loads hls.js once; resolves with its `Hls` class, or null when camhub has none to serve. */
function loadHlsJs() {
  if (loading) return loading;
  loading = new Promise((resolve) => {
    const script = document.createElement('script');
    script.src = '/assets/hls.js';
    script.async = true;
    script.addEventListener('load', () => resolve(window.Hls ?? null));
    script.addEventListener('error', () => resolve(null));
    document.head.append(script);
  });
  return loading;
}

export class HlsSession {
  /**
   * `url`: the camera's playlist (`/hls/<id>/index.m3u8`); `credential`: a JWT or API key, sent as a header;
   * `mediaToken()`: resolves with a media token, for a browser that plays HLS itself and cannot send a header.
   */
  constructor(url, credential, mediaToken) {
    this.url = url;
    this.credential = credential;
    this.mediaToken = mediaToken;
    this.hls = null;
    this.video = null;
    this.closed = false;
  }

  /** Plays the stream in `video`; resolves with milliseconds to the first presented frame, rejects on failure. */
  async start(video) {
    this.video = video;
    const started = performance.now();
    const Hls = await loadHlsJs();
    if (this.closed) throw new Error('closed');
    const failed = new Promise((_, reject) => {
      this.fail = reject;
    });
    if (Hls?.isSupported()) {
      const credential = this.credential;
      // No worker: the page's policy allows scripts from camhub only, and a worker would be a blob.
      const hls = new Hls({
        enableWorker: false,
        lowLatencyMode: true,
        // Catch up with the live edge (PART-HOLD-BACK) by playing a little faster, rather than staying behind.
        maxLiveSyncPlaybackRate: 1.5,
        xhrSetup: (xhr) => xhr.setRequestHeader('Authorization', `Bearer ${credential}`),
      });
      this.hls = hls;
      hls.on(Hls.Events.ERROR, (_, data) => {
        if (data.fatal) this.fail?.(new Error(`HLS: ${data.details}`));
      });
      hls.loadSource(this.url);
      hls.attachMedia(video);
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      const token = await this.mediaToken();
      if (this.closed) throw new Error('closed');
      video.src = `${this.url}?token=${encodeURIComponent(token)}`;
    } else {
      throw new Error('this browser plays no HLS, and camhub serves no hls.js (hls.player_js)');
    }
    video.play().catch(() => {});
    const firstFrame = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no HLS video within 20 s')), FIRST_FRAME_TIMEOUT_MS);
      video.requestVideoFrameCallback(() => {
        clearTimeout(timer);
        resolve(performance.now() - started);
      });
    });
    return Promise.race([firstFrame, failed]);
  }

  stop() {
    this.closed = true;
    this.fail = null;
    this.hls?.destroy();
    this.hls = null;
    if (this.video) {
      this.video.removeAttribute('src');
      this.video.load();
    }
  }
}
