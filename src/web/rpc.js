// camhub's JSON-RPC 2.0 over WebSocket, for the page: one socket, authenticated with the `authenticate` method (never
// a credential in the URL), reconnected with backoff and re-authenticated after every reconnect.

const CALL_TIMEOUT_MS = 10000;
const HEARTBEAT_MS = 15000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;
/** JSON-RPC code for "authentication failed or required". */
export const AUTH_FAILED = -32001;

export class RpcError extends Error {
  constructor(error) {
    super(error.message || 'request failed');
    this.code = error.code;
    this.data = error.data;
  }
}

/**
 * Events (EventTarget):
 * - `state`: detail `{ state: 'connecting' | 'online' | 'offline', retryInMs? }`
 * - `authenticated`: detail = the `authenticate` result, after every (re)connection
 * - `auth-failed`: detail = RpcError; the connection stays closed until `start` is called again
 * - `notification`: detail `{ method, params }`
 */
export class RpcClient extends EventTarget {
  /** `credential` is a function so a changed credential is picked up on the next connection. */
  constructor(url, credential) {
    super();
    this.url = url;
    this.credential = credential;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.attempt = 0;
    this.running = false;
    this.retryTimer = 0;
    this.heartbeat = 0;
    this.authenticated = false;
  }

  start() {
    this.running = true;
    this.attempt = 0;
    this.#connect();
  }

  stop() {
    this.running = false;
    clearTimeout(this.retryTimer);
    clearInterval(this.heartbeat);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000, 'signed out');
      this.ws = null;
    }
    this.#failPending('signed out');
  }

  get online() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.authenticated === true;
  }

  /** Calls `method`; resolves with the result, rejects with an RpcError or an Error (connection). */
  call(method, params = {}, timeoutMs = CALL_TIMEOUT_MS) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Error('not connected to camhub'));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method}: no answer in ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, method });
      ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
    });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #connect() {
    clearTimeout(this.retryTimer);
    this.authenticated = false;
    this.#emit('state', { state: 'connecting' });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.#scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => this.#onMessage(ev.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.authenticated = false;
      clearInterval(this.heartbeat);
      this.#failPending('connection to camhub lost');
      if (this.running) this.#scheduleRetry();
    };
    ws.onopen = async () => {
      try {
        const result = await this.call('authenticate', { auth_token: this.credential() });
        this.authenticated = true;
        this.attempt = 0;
        this.#startHeartbeat(ws);
        this.#emit('state', { state: 'online' });
        this.#emit('authenticated', result);
      } catch (e) {
        if (e instanceof RpcError && e.code === AUTH_FAILED) {
          this.stop();
          this.#emit('state', { state: 'offline' });
          this.#emit('auth-failed', e);
        } else {
          ws.close();
        }
      }
    };
  }

  /** A socket can stay "open" through a dead peer; a ping with a deadline finds out. */
  #startHeartbeat(ws) {
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => {
      if (this.ws !== ws) return;
      this.call('ping', {}, 5000).catch(() => ws.close());
    }, HEARTBEAT_MS);
  }

  #scheduleRetry() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    this.#emit('state', { state: 'offline', retryInMs: delay });
    this.retryTimer = setTimeout(() => this.#connect(), delay);
  }

  #failPending(reason) {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new Error(reason));
    }
    this.pending.clear();
  }

  #onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.id !== undefined && msg.id !== null && this.pending.has(msg.id)) {
      const { resolve, reject, timer } = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      clearTimeout(timer);
      if (msg.error) reject(new RpcError(msg.error));
      else resolve(msg.result);
    } else if (typeof msg.method === 'string' && msg.id === undefined) {
      this.#emit('notification', { method: msg.method, params: msg.params ?? {} });
    }
  }
}
