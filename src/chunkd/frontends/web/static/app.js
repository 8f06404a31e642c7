// The upload page: sign in (or open an upload link), pick or drop files, watch them go.
// Every rule (limits, scopes, expiry) is enforced by the server; the page only shows its answers.

import { Api, FileUpload, ResumeStore, signIn } from './uploader.js';

const $ = (id) => document.getElementById(id);
const linkToken = takeLinkToken();
const api = new Api(null); // its token is replaced on every sign-in; never written anywhere
const uploads = [];
let store = null;
let owner = null; // who is signed in (or was, until the session ended): each owner has a store of its own

function show(id, visible = true) { $(id).hidden = !visible; }

/** An upload link's token arrives in the URL's fragment (/#link=…), which no server sees; it is read
 * once, kept for this tab only (sessionStorage: a reload finds it there), and taken out of the address
 * bar and the tab's history, where anyone looking at the screen, or going back, found it. */
function takeLinkToken() {
  const KEY = 'chunkd.link';
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get('link');
  if (fromUrl) {
    sessionStorage.setItem(KEY, fromUrl);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(KEY);
}

function message(text, kind = 'error') {
  const box = $('message');
  box.textContent = text || '';
  box.className = kind;
  box.hidden = !text;
}

export function formatBytes(n) {
  if (n == null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function button(label, action, className = '') {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.className = className;
  b.addEventListener('click', action);
  return b;
}

// ---- signing in --------------------------------------------------------------------------------
$('sign-in-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = $('api-key');
  const key = input.value;
  input.value = ''; // the key leaves the page's memory with this handler
  try {
    const session = await signIn(key);
    if (owner !== null && session.owner !== owner) forgetOwner(); // another owner, after a session ended
    owner = session.owner;
    api.token = session.api.token;
    message(null);
    store = ResumeStore.forOwner(owner);
    show('sign-in', false);
    show('uploader');
    show('sign-out');
    $('who').textContent = `signed in (${session.scope.join(', ')})`;
    show('files', session.scope.includes('files:read'));
    if (session.scope.includes('files:read')) refreshFiles();
    show('links', session.scope.includes('links:admin'));
    if (session.scope.includes('links:admin')) refreshLinks();
    for (const upload of uploads) if (upload.state === 'failed' && upload.error.status === 401) upload.resume();
  } catch (error) {
    message(`Sign-in failed: ${error.message}`);
  }
});

/** Nothing of the owner signed in before stays on the page: their uploads (which would go on, or
 * resume, with the new owner's token), files and links. */
function forgetOwner() {
  for (const upload of uploads) {
    upload.pause();
    upload.row.li.remove();
  }
  uploads.length = 0;
  $('file-rows').replaceChildren();
  $('link-rows').replaceChildren();
  show('link-created', false);
  draw();
}

$('sign-out').addEventListener('click', () => {
  for (const upload of uploads) upload.pause();
  api.token = null;
  location.reload();
});

function sessionEnded(upload) {
  if (linkToken) {
    message(`This upload link cannot be used any more: ${upload ? upload.error.message : 'it was refused'}`);
    return;
  }
  api.token = null;
  message('Your session has ended: sign in again to continue (unfinished uploads will resume).');
  show('sign-in');
  show('sign-out', false);
}

// ---- upload links ------------------------------------------------------------------------------
async function openLink() {
  api.token = linkToken;
  show('link-info');
  try {
    const link = await showLinkLimits();
    store = new ResumeStore(`link.${link.id}`);
    $('link-note').textContent = link.note || 'You were sent a link to upload files here.';
    show('uploader');
  } catch (error) {
    $('link-note').textContent = '';
    message(`This upload link cannot be used: ${error.message}`);
  }
}

/** The link's limits and what is left of them, read again after each file (the counts move). */
async function showLinkLimits() {
  const link = await api.request('GET', '/v1/upload-links/current');
  const limits = [];
  if (link.maxFiles != null) limits.push(`up to ${link.maxFiles} files (${link.maxFiles - link.filesUploaded} left)`);
  if (link.maxBytes != null) limits.push(`up to ${formatBytes(link.maxBytes)} (${formatBytes(link.maxBytes - link.bytesUploaded)} left)`);
  if (link.allowedMimeTypes) limits.push(`types: ${link.allowedMimeTypes.join(', ')}`);
  limits.push(`open until ${new Date(link.expiresAt).toLocaleString()}`);
  $('link-limits').textContent = `This link accepts ${limits.join('; ')}.`;
  return link;
}

// ---- files picked ------------------------------------------------------------------------------
// At most this many files upload at once; the others wait their turn, in the order picked. Started
// all at once, 50 files picked made 50 uploads (past a quota of pending uploads, the rest failed)
// and 50 MD5s reading 4 MiB at a time, beside 150 part requests queued in the browser.
const PARALLEL_FILES = 3;
let filesRunning = 0;

function startWaitingFiles() {
  while (filesRunning < PARALLEL_FILES) {
    // A file paused or failed before its turn is started by its own Resume button, not from here.
    const next = uploads.find((u) => u.state === 'waiting' && !u.queued);
    if (!next) return;
    next.queued = true;
    filesRunning++;
    next.start().then(() => {
      if (linkToken) showLinkLimits().catch(() => {}); // a link that ended says so on the next file
      else if (next.state === 'done') refreshFiles();
    }).finally(() => {
      filesRunning--;
      startWaitingFiles();
    });
  }
}

function addFiles(fileList) {
  message(null);
  for (const file of fileList) {
    const same = uploads.find((u) => u.file.name === file.name && u.file.size === file.size
      && u.file.lastModified === file.lastModified && !['done', 'cancelled', 'failed'].includes(u.state));
    if (same) continue;
    const upload = new FileUpload(file, {
      api, store, readsFinished: !linkToken, onChange: draw, onUnauthorized: sessionEnded,
    });
    upload.row = makeRow(upload);
    uploads.push(upload);
  }
  startWaitingFiles();
  draw();
}

$('pick').addEventListener('change', (event) => { addFiles(event.target.files); event.target.value = ''; });
const drop = $('drop');
drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (event) => {
  event.preventDefault();
  drop.classList.remove('over');
  if (event.dataTransfer && event.dataTransfer.files.length) addFiles(event.dataTransfer.files);
});
drop.addEventListener('keydown', (event) => {
  if (event.key !== 'Enter' && event.key !== ' ') return;
  event.preventDefault(); // Space would scroll the page too
  $('pick').click();
});

function makeRow(upload) {
  const li = document.createElement('li');
  li.dataset.name = upload.file.name;
  const line = document.createElement('div');
  line.className = 'line';
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = upload.file.name;
  const status = document.createElement('span');
  status.className = 'status';
  const percent = document.createElement('span');
  percent.className = 'percent';
  const pause = button('Pause', () => (upload.state === 'paused' || upload.state === 'failed' ? upload.resume() : upload.pause()), 'pause');
  const cancel = button('Cancel', () => upload.cancel(), 'cancel');
  line.append(name, status, percent, pause, cancel);
  cancel.setAttribute('aria-label', `Cancel ${upload.file.name}`);
  const bar = document.createElement('progress');
  bar.max = 1;
  bar.value = 0;
  bar.setAttribute('aria-label', upload.file.name);
  const detail = document.createElement('div');
  detail.className = 'muted detail';
  li.append(line, bar, detail);
  $('uploads').prepend(li);
  return { li, status, percent, pause, cancel, bar, detail };
}

const LABELS = {
  waiting: 'waiting', uploading: 'uploading', paused: 'paused', completing: 'verifying',
  done: 'done', failed: 'failed', cancelled: 'cancelled',
};

let drawPending = false;
function draw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    let size = 0, sent = 0;
    for (const upload of uploads) {
      const row = upload.row;
      const fraction = upload.size ? upload.sent / upload.size : (upload.state === 'done' ? 1 : 0);
      row.li.dataset.state = upload.state;
      row.status.textContent = LABELS[upload.state] + (upload.resumed && upload.state !== 'done' ? ' (resumed)' : '');
      row.percent.textContent = `${Math.floor(fraction * 100)}%`;
      row.bar.value = fraction;
      row.pause.textContent = upload.state === 'paused' || upload.state === 'failed' ? 'Resume' : 'Pause';
      row.pause.setAttribute('aria-label', `${row.pause.textContent} ${upload.file.name}`);
      row.pause.hidden = row.cancel.hidden = ['done', 'cancelled', 'completing'].includes(upload.state);
      const detail = `${formatBytes(upload.sent)} of ${formatBytes(upload.size)}`;
      row.detail.textContent = upload.error ? `${detail} · ${upload.error.message}` : upload.state === 'done' ? `${detail} · MD5 ${upload.md5}` : detail;
      row.detail.classList.toggle('error', Boolean(upload.error));
      if (upload.state !== 'cancelled') { size += upload.size; sent += upload.sent; }
    }
    show('total', uploads.length > 0);
    $('total-bar').value = size ? sent / size : 0;
    $('total-text').textContent = `${formatBytes(sent)} of ${formatBytes(size)} (${size ? Math.floor((sent / size) * 100) : 0}%)`;
  });
}

// ---- the owner's files -------------------------------------------------------------------------
async function refreshFiles() {
  let page;
  try {
    page = await api.request('GET', '/v1/files?limit=100');
  } catch (error) {
    if (error.status === 401) sessionEnded();
    else message(`Cannot list your files: ${error.message}`);
    return;
  }
  const rows = page.data.map((file) => {
    const tr = document.createElement('tr');
    tr.dataset.id = file.id;
    tr.dataset.status = file.status;
    for (const text of [file.filename, file.status, formatBytes(file.sizeBytes), new Date(file.createdAt).toLocaleString()]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    const actions = document.createElement('td');
    actions.className = 'actions';
    if (file.status === 'COMPLETED') actions.append(button('Download', () => download(file), 'download'));
    actions.append(' ', button('Delete', () => remove(file), 'delete'));
    tr.append(actions);
    return tr;
  });
  $('file-rows').replaceChildren(...rows);
}

// The browser streams the file to disk itself: the page asks for a short-lived URL signed for this
// file's download alone and follows it, so no credential is in the URL and no byte passes through
// the page's memory (a Blob of a 4 GB file held 4 GB in the tab). The server answers it with
// Content-Disposition: attachment, so the page stays where it is.
async function download(file) {
  try {
    const { url } = await api.request('POST', `/v1/files/${file.id}/download-url`);
    const a = document.createElement('a');
    a.href = url;
    a.download = file.filename;
    a.rel = 'noopener noreferrer';
    a.click();
  } catch (error) {
    message(`Download failed: ${error.message}`);
  }
}

async function remove(file) {
  try {
    await api.request('DELETE', `/v1/files/${file.id}`);
    message(`Deleted ${file.filename}.`, 'info');
  } catch (error) {
    message(`Delete failed: ${error.message}`);
  }
  refreshFiles();
}

$('refresh').addEventListener('click', refreshFiles);

// ---- the owner's upload links (scope links:admin) ----------------------------------------------
$('link-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const body = { expiresIn: Number($('link-days').value || 7) * 86400 };
  if ($('link-files').value) body.maxFiles = Number($('link-files').value);
  if ($('link-mib').value) body.maxBytes = Number($('link-mib').value) * 1024 * 1024;
  if ($('link-note-input').value.trim()) body.note = $('link-note-input').value.trim();
  try {
    const link = await api.request('POST', '/v1/upload-links', body);
    $('link-url').value = link.url;
    show('link-created');
    $('link-url').select();
    refreshLinks();
  } catch (error) {
    message(`Cannot create the link: ${error.message}`);
  }
});

async function refreshLinks() {
  let page;
  try {
    page = await api.request('GET', '/v1/upload-links');
  } catch (error) {
    message(`Cannot list your upload links: ${error.message}`);
    return;
  }
  const rows = page.data.map((link) => {
    const tr = document.createElement('tr');
    tr.dataset.id = link.id;
    const expired = new Date(link.expiresAt) <= new Date();
    const state = link.revokedAt ? 'revoked' : expired ? 'expired' : 'open';
    const used = `${link.filesUploaded}${link.maxFiles != null ? ` / ${link.maxFiles}` : ''} files, `
      + `${formatBytes(link.bytesUploaded)}${link.maxBytes != null ? ` / ${formatBytes(link.maxBytes)}` : ''}`;
    for (const text of [link.note || '', used, new Date(link.expiresAt).toLocaleString(), state]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    const actions = document.createElement('td');
    actions.className = 'actions';
    if (state === 'open') {
      actions.append(button('Revoke', async () => {
        try { await api.request('DELETE', `/v1/upload-links/${link.id}`); } catch (error) { message(error.message); }
        refreshLinks();
      }, 'revoke'));
    }
    tr.append(actions);
    return tr;
  });
  $('link-rows').replaceChildren(...rows);
}
window.addEventListener('online', () => { for (const u of uploads) if (u.state === 'failed' && u.error.status === 0) u.resume(); });

if (linkToken) openLink();
else show('sign-in');
window.chunkdUploads = uploads; // for tests and the curious: read-only use
