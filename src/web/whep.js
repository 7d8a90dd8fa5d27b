// A WHEP (WebRTC-HTTP Egress Protocol) client, non-trickle: gather every ICE candidate, POST one SDP offer, set the
// answer; DELETE the session URL (the answer's Location) to end it. The credential goes in the Authorization header,
// never in a URL.

const GATHER_TIMEOUT_MS = 1500;
const FIRST_FRAME_TIMEOUT_MS = 15000;

export class WhepError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** Resolves when ICE gathering completes, or after `timeoutMs` with what has been gathered so far. */
function gathered(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

export class WhepSession {
  /**
   * `url`: the camera's WHEP endpoint; `credential`: a JWT or API key; `onState(connectionState)` is told of every
   * peer-connection change.
   */
  constructor(url, credential, onState) {
    this.url = url;
    this.credential = credential;
    this.onState = onState;
    this.pc = null;
    this.location = null;
    this.closed = false;
  }

  /**
   * Starts the session and plays it in `video`. Resolves with milliseconds from the POST: `answer` (the 201 is in),
   * `connected` (ICE and DTLS are up), `firstFrame` (the first decoded frame is presented); rejects with a WhepError
   * (HTTP) or an Error (WebRTC, timeout, closed).
   */
  async start(video) {
    const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
    this.pc = pc;
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addEventListener('track', (ev) => {
      if (this.closed) return;
      video.srcObject = ev.streams[0] ?? new MediaStream([ev.track]);
      video.play().catch(() => {});
    });
    pc.addEventListener('connectionstatechange', () => {
      if (!this.closed) this.onState?.(pc.connectionState);
    });

    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, GATHER_TIMEOUT_MS);
    if (this.closed) throw new Error('closed');

    const posted = performance.now();
    const times = { answer: NaN, connected: NaN, firstFrame: NaN };
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'connected' && Number.isNaN(times.connected)) times.connected = performance.now() - posted;
    });
    const firstFrame = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no video frame within 15 s')), FIRST_FRAME_TIMEOUT_MS);
      video.requestVideoFrameCallback(() => {
        clearTimeout(timer);
        times.firstFrame = performance.now() - posted;
        resolve(times);
      });
    });
    firstFrame.catch(() => {});

    const res = await fetch(this.url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${this.credential}` },
      body: pc.localDescription.sdp,
      cache: 'no-store',
      credentials: 'omit',
    });
    const body = await res.text();
    times.answer = performance.now() - posted;
    if (res.status !== 201) {
      throw new WhepError(`WHEP ${res.status}: ${body.trim().slice(0, 160) || res.statusText}`, res.status);
    }
    const location = res.headers.get('Location');
    this.location = location ? new URL(location, new URL(this.url, window.location.href)).href : null;
    if (this.closed) {
      this.#delete();
      throw new Error('closed');
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    return firstFrame;
  }

  /** Ends the session: closes the peer connection and DELETEs the session on the server (also during unload). */
  stop() {
    if (this.closed) return;
    this.closed = true;
    this.pc?.close();
    this.#delete();
  }

  #delete() {
    if (!this.location) return;
    const location = this.location;
    this.location = null;
    // keepalive lets the request outlive the page when it is being unloaded.
    fetch(location, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${this.credential}` },
      keepalive: true,
      credentials: 'omit',
    }).catch(() => {});
  }
}
