// The upload engine of the page, over chunkd's native Files API (no DOM here; app.js draws it).
//
// Why a small hand-written module and not a vendored Uppy bundle: Uppy's Dashboard + tus build is
// ~500 KB minified and must be rebuilt from npm to update, where this page needs a few hundred
// lines and no build step; the native API sends numbered parts in parallel (tus appends one
// writer at a time) and verifies the whole file's MD5 at "complete", which Uppy's tus plugin
// cannot pass on; and the page must resume from the server's own list of parts after a reload,
// which is one GET here. Uppy/tus-js-client still work against chunkd: an upload link's token is
// accepted by the tus endpoint too.

import { md5OfBlob } from './md5.js';

export const PARALLEL_PARTS = 3; // parts of one file in flight at once
const MAX_RETRIES = 6; // for 5xx/429/408 answers; network failures retry until back online

export class ApiError extends Error {
  constructor(status, body, retryAfter = null) {
    const error = (body && body.error) || {};
    super(error.message || (status === 0 ? 'the network connection was lost' : `the server answered ${status}`));
    this.status = status;
    this.code = error.code || (status === 0 ? 'network' : `http_${status}`);
    this.field = error.field || null;
    this.retryAfter = retryAfter;
  }
}

class Stopped extends Error {}

/** The file can no longer be read: Chromium sends no part of a file changed since it was picked
 * (net::ERR_UPLOAD_FILE_CHANGED), which the page sees as a network error, and would try again for ever. */
export class FileChanged extends Error {
  constructor() {
    super('the file changed on disk after it was picked: pick it again');
    this.code = 'file_changed';
  }
}

async function readable(blob) {
  try { await blob.slice(0, 1).arrayBuffer(); return true; } catch { return false; }
}

function parse(text) {
  try { return text ? JSON.parse(text) : null; } catch { return null; }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function onlineAgain() {
  if (navigator.onLine) return Promise.resolve();
  return new Promise((resolve) => window.addEventListener('online', () => resolve(), { once: true }));
}

/** The server's API for one credential (an access token or an upload link's token), held in memory only. */
export class Api {
  constructor(token) { this.token = token; }

  async request(method, path, body) {
    const headers = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method, headers, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, null);
    }
    const data = parse(await response.text());
    if (!response.ok) throw new ApiError(response.status, data, response.headers.get('Retry-After'));
    return data;
  }
}

/** Exchange an API key for a short-lived access token; the key itself is not kept anywhere. The
 * owner is the token's `sub` claim (the server signed it; the page only reads it, to keep each
 * owner's resume entries apart). */
export async function signIn(key) {
  const api = new Api(key.trim());
  const token = await api.request('POST', '/v1/auth/token');
  return {
    api: new Api(token.accessToken), owner: subjectOf(token.accessToken), expiresIn: token.expiresIn,
    scope: token.scope.split(' '),
  };
}

function subjectOf(jwt) {
  const payload = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
  const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes)).sub;
}

/**
 * Which upload a file picked earlier belongs to: (name, size, lastModified) → upload id, in
 * localStorage. Ids only, never a key or token: an id is useless without a credential. One store
 * per owner (`owner.<name>`) or upload link (`link.<id>`): with one for every owner, a second owner
 * signing in on the same browser was offered the first's upload ids, and dropped them (a 404).
 */
export class ResumeStore {
  constructor(namespace) { this.key = `chunkd.resume.${namespace}`; }
  static forOwner(owner) {
    const store = new ResumeStore(`owner.${encodeURIComponent(owner)}`);
    // The one store all owners shared before goes to the first owner to sign in after the change
    // (a browser mostly has one), so uploads under way then still resume; an id of another owner's
    // is answered 404 and dropped, as any stale id is.
    const shared = localStorage.getItem('chunkd.resume.owner');
    if (shared !== null) {
      if (localStorage.getItem(store.key) === null) localStorage.setItem(store.key, shared);
      localStorage.removeItem('chunkd.resume.owner');
    }
    return store;
  }
  static fileKey(file) { return `${file.name}\u0000${file.size}\u0000${file.lastModified}`; }
  _all() { return parse(localStorage.getItem(this.key)) || {}; }
  get(file) { return this._all()[ResumeStore.fileKey(file)] || null; }
  set(file, id) {
    const all = this._all();
    all[ResumeStore.fileKey(file)] = id;
    localStorage.setItem(this.key, JSON.stringify(all));
  }
  delete(file) {
    const all = this._all();
    delete all[ResumeStore.fileKey(file)];
    localStorage.setItem(this.key, JSON.stringify(all));
  }
}

/**
 * One file's upload: create (or find again) → parts in parallel → complete with the MD5.
 * States: waiting, uploading, paused, completing, done, failed, cancelled.
 * `onChange(upload)` is called on every change of state or progress.
 */
export class FileUpload {
  constructor(file, { api, store, readsFinished = true, onChange = () => {}, onUnauthorized = () => {} }) {
    this.file = file;
    this.api = api;
    this.store = store;
    this.readsFinished = readsFinished; // false for an upload link's token: it reads only unfinished uploads
    this.onChange = onChange;
    this.onUnauthorized = onUnauthorized;
    this.state = 'waiting';
    this.error = null;
    this.meta = null; // the file object from the server
    this.received = new Set(); // part numbers the server holds
    this.acked = 0; // bytes of those parts
    this.inflight = new Map(); // part number → bytes sent so far
    this.requests = new Set();
    this.resumed = false;
    this.md5 = null;
    this.hashed = 0;
    this.running = null;
    this.opening = null;
    // Each run of _run has its own number: a pause, a failure or a new run ends the runs before
    // it, also their workers waiting out a backoff or the network (they stop at their next step).
    this.run = 0;
  }

  get size() { return this.file.size; }
  get sent() {
    let inflight = 0;
    for (const bytes of this.inflight.values()) inflight += bytes;
    return this.state === 'done' ? this.size : Math.min(this.size, this.acked + inflight);
  }

  _emit() { this.onChange(this); }
  _stopped(run = this.run) { return run !== this.run || this.state === 'paused' || this.state === 'cancelled'; }

  start() {
    if (this.running || this.state === 'done' || this.state === 'cancelled') return this.running;
    this.state = 'uploading';
    this.error = null;
    this._emit();
    const running = this._run(++this.run).finally(() => { if (this.running === running) this.running = null; });
    this.running = running;
    return running;
  }

  pause() {
    if (this.state !== 'uploading' && this.state !== 'waiting') return;
    this.state = 'paused';
    this.run++;
    this._abortAll();
    this._emit();
  }

  resume() {
    if (this.state === 'paused' || this.state === 'failed') {
      this.state = 'waiting';
      this.running = null; // the paused or failed run ends at its next step (its number is over)
      return this.start();
    }
    return this.running;
  }

  async cancel() {
    if (this.state === 'done' || this.state === 'cancelled') return;
    this.state = 'cancelled';
    this._abortAll();
    this.store.delete(this.file);
    this._emit();
    if (this.meta) {
      try { await this.api.request('POST', `/v1/files/${this.meta.id}/cancel`); } catch { /* already gone */ }
    }
  }

  _abortAll() {
    for (const xhr of this.requests) xhr.abort();
    this.requests.clear();
    this.inflight.clear();
  }

  async _run(run) {
    try {
      if (!this.meta) {
        // One creation however many runs wait for it (a run resumed while the paused one's was on its way).
        this.opening = this.opening || this._open().finally(() => { this.opening = null; });
        await this.opening;
      }
      if (this._stopped(run)) return;
      this._hash();
      if (this.meta.status === 'COMPLETED') { // completed already, from this file's bytes (see _open)
        this.md5 = this.meta.md5;
        this._done(this.meta);
        return;
      }
      await this._sendMissing(run);
      if (this._stopped(run)) return;
      this.state = 'completing';
      this._emit();
      this.md5 = await this.hashing;
      if (this._stopped(run)) return;
      let done;
      try {
        done = await this._complete(run);
      } catch (error) {
        // Parts the server holds came from other bytes: a file changed in place keeping its name,
        // size and date (the resume key), or changed while it was sent. Send every part again,
        // once, as the CLI does; the upload stays the same.
        if (error.code !== 'checksum_mismatch' || this._stopped(run)) throw error;
        this.received.clear();
        this.acked = 0;
        this.state = 'uploading';
        this._emit();
        await this._sendMissing(run);
        if (this._stopped(run)) return;
        this.state = 'completing';
        this._emit();
        done = await this._complete(run);
      }
      this._done(done);
    } catch (error) {
      if (error instanceof Stopped || this._stopped(run)) return;
      this.run++; // its other workers stop too, those waiting to try again included
      this._abortAll();
      this.state = 'failed';
      this.error = error;
      if (error.status === 401) this.onUnauthorized(this);
      this._emit();
    }
  }

  _done(file) {
    this.meta = { ...this.meta, ...file };
    this.store.delete(this.file);
    this.state = 'done';
    this._emit();
  }

  /** The whole file's MD5, read in slices beside the parts (started once). */
  _hash() {
    if (!this.hashing) {
      this.hashing = md5OfBlob(this.file, {
        onBytes: (n) => { this.hashed = n; },
        isStopped: () => this.state === 'cancelled',
      }).catch(() => { throw new FileChanged(); }); // a read refused: the file changed since it was picked
      this.hashing.catch(() => {}); // awaited before the complete; until then its failure is no unhandled rejection
    }
    return this.hashing;
  }

  _complete(run) {
    return this._withRetries(run, () => this.api.request('POST', `/v1/files/${this.meta.id}/complete`, { md5: this.md5 }));
  }

  /** Find the upload this file was already going to (same name, size and date), or create one. */
  async _open() {
    const known = this.store.get(this.file);
    if (known) {
      try {
        const found = await this.api.request('GET', `/v1/files/${encodeURIComponent(known)}`);
        // Completed already: the complete reached the server but its answer did not reach the page
        // (reloaded, or the connection lost, in the middle of it). The file's if its MD5 is: a file
        // changed since, keeping its name, size and date, is sent anew.
        if (found.status === 'COMPLETED' && found.sizeBytes === this.file.size && found.md5
            && found.md5 === await this._hash()) {
          this.meta = found;
          return;
        }
        if (found.status === 'PENDING' && found.sizeBytes === this.file.size) {
          this.meta = found;
          for (const part of found.parts || []) {
            this.received.add(part.partNumber);
            this.acked += part.sizeBytes;
          }
          this.resumed = true;
          this._emit();
          return;
        }
      } catch (error) {
        if (error.status !== 404 && error.status !== 403) throw error; // gone, or not readable: start anew
        if (error.status === 404 && !this.readsFinished && await this._completedAlready(known)) return;
      }
      this.store.delete(this.file);
    }
    const body = { filename: this.file.name || 'upload', sizeBytes: this.file.size };
    if (this.file.type) body.mimeType = this.file.type;
    this.meta = await this.api.request('POST', '/v1/files', body);
    this.store.set(this.file, this.meta.id);
    this._emit();
  }

  /** Whether the upload `id`, which a link's token no longer reads, is this file's, completed: a
   * link reads none of its finished uploads (by design), so its 404 may be its own upload completed
   * while the page was away (reloaded during the complete), and a new upload made a second copy.
   * The complete sent again with this file's MD5 tells it without reading anything back: answered
   * as the first one was for the same bytes, a checksum_mismatch for other bytes, a 404 or 409 for
   * an upload gone, cancelled or expired (started anew). Only the link's own uploads answer it. */
  async _completedAlready(id) {
    const md5 = await this._hash();
    try {
      const done = await this.api.request('POST', `/v1/files/${encodeURIComponent(id)}/complete`, { md5 });
      if (done.status !== 'COMPLETED' || done.sizeBytes !== this.file.size) return false;
      this.meta = { ...done, md5 };
      return true;
    } catch (error) {
      if ([404, 409].includes(error.status) || error.code === 'checksum_mismatch') return false;
      throw error; // the link refused (401), the server or network away: this run fails, Resume tries again
    }
  }

  async _sendMissing(run) {
    const queue = [];
    for (let n = 1; n <= this.meta.partCount; n++) if (!this.received.has(n)) queue.push(n);
    const worker = async () => {
      while (queue.length && !this._stopped(run)) {
        const n = queue.shift();
        await this._withRetries(run, () => this._putPart(n));
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL_PARTS, queue.length) }, worker));
  }

  /** Retry network failures (waiting to be back online) and 5xx/429/408, with backoff. */
  async _withRetries(run, attempt) {
    for (let tries = 0; ; tries++) {
      if (this._stopped(run)) throw new Stopped();
      try {
        return await attempt();
      } catch (error) {
        if (error instanceof Stopped || this._stopped(run)) throw new Stopped();
        const transient = error.status >= 500 || error.status === 429 || error.status === 408 || error.code === 'upload_busy';
        if (error.status !== 0 && (!transient || tries >= MAX_RETRIES)) throw error;
        if (error.status === 0) await onlineAgain();
        const wait = error.retryAfter ? Number(error.retryAfter) * 1000 : Math.min(8000, 250 * 2 ** Math.min(tries, 5));
        await sleep(wait * (0.75 + Math.random() / 2));
      }
    }
  }

  _putPart(n) {
    const start = (n - 1) * this.meta.partSize;
    const blob = this.file.slice(start, Math.min(start + this.meta.partSize, this.file.size));
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.requests.add(xhr);
      const settle = () => { this.requests.delete(xhr); this.inflight.delete(n); };
      xhr.open('PUT', `/v1/files/${this.meta.id}/parts/${n}`);
      xhr.setRequestHeader('Authorization', `Bearer ${this.api.token}`);
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      xhr.upload.onprogress = (event) => { this.inflight.set(n, event.loaded); this._emit(); };
      xhr.onload = () => {
        settle();
        if (xhr.status >= 200 && xhr.status < 300) {
          if (!this.received.has(n)) { this.received.add(n); this.acked += blob.size; }
          this._emit();
          resolve();
        } else {
          reject(new ApiError(xhr.status, parse(xhr.responseText), xhr.getResponseHeader('Retry-After')));
        }
      };
      xhr.onerror = () => {
        settle();
        readable(this.file).then((ok) => reject(ok ? new ApiError(0, null) : new FileChanged()));
      };
      xhr.ontimeout = xhr.onerror;
      xhr.onabort = () => { settle(); reject(new Stopped()); };
      xhr.send(blob);
    });
  }
}
