// The batch dashboard: plain JavaScript, no build step, no dependencies.
// Everything goes through the public HTTP API of the batch handler (and,
// for the live view, the host's live endpoints), authenticated by the
// host's session cookie or by an API key kept in sessionStorage and sent
// as the IM-API-KEY header; never in a URL. Data reaches the page only as
// text (textContent, el's children): never as HTML.
//
// Views have URLs of their own, in the fragment: #/batches (the live list,
// the JSON composer and the live messages), #/batches/{id} (the same with
// a batch in detail), #/compose (form and CSV), #/history?… (filters and
// the page's cursor) and #/queue.
"use strict";

const $ = (id) => document.getElementById(id);
const cfg = document.body.dataset;
const batchPath = cfg.batchPath;
const sessionAuth = cfg.sessionAuth === "true";
const liveBase = cfg.liveBase || "";
const liveLimit = Number(cfg.liveLimit) || 200;
const KEY_STORAGE = "chatbatch.dashboard.apiKey";
const maxRecipients = Number(cfg.maxRecipients) || 10000;
const FINISHED = new Set(["completed", "completed_with_errors", "canceled", "recalled"]);

// ---- authentication and the API -------------------------------------------

function apiKey() {
  if (sessionAuth) return "";
  try { return sessionStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
}

function authHeaders() {
  const k = apiKey();
  return k ? { "IM-API-KEY": k } : {};
}

class APIError extends Error {
  constructor(status, error) {
    super(error && error.message ? error.message : `HTTP ${status}`);
    this.status = status;
    this.error = error || { code: `HTTP_${status}`, message: `HTTP ${status}`, details: [] };
  }
}

// envelopeError turns a failed response into an APIError, whatever its body.
async function envelopeError(res) {
  const text = await res.text().catch(() => "");
  let error = null;
  try {
    const env = JSON.parse(text);
    if (env && env.error) error = env.error;
  } catch { /* not JSON */ }
  if (!error) {
    error = { code: `HTTP_${res.status}`, message: (text.trim() || res.statusText || "request failed").slice(0, 300), details: [] };
  }
  return new APIError(res.status, error);
}

// apiRaw calls the API and returns the envelope's result with the
// response (for its headers), or throws APIError.
async function apiRaw(method, path, body, headers) {
  const h = { Accept: "application/json", ...authHeaders(), ...(headers || {}) };
  if (body !== undefined) h["Content-Type"] = "application/json; charset=utf-8";
  let res;
  try {
    res = await fetch(path, { method, headers: h, body, credentials: "same-origin", cache: "no-store" });
  } catch (e) {
    throw new APIError(0, { code: "NETWORK_ERROR", message: `the server did not answer: ${e.message}`, details: [] });
  }
  if (!res.ok) throw await envelopeError(res);
  const env = await res.json().catch(() => null);
  if (!env || env.RC !== 0) throw new APIError(res.status, env && env.error);
  return { result: env.result, res };
}

// api calls the API and returns the envelope's result, or throws APIError.
async function api(method, path, body, headers) {
  return (await apiRaw(method, path, body, headers)).result;
}

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// showError renders an error envelope as a message with its details.
function showError(box, err) {
  const e = err instanceof APIError ? err.error : { code: "ERROR", message: String(err && err.message || err), details: [] };
  box.replaceChildren();
  box.dataset.code = e.code || "";
  const head = el("p", { class: "error-title" },
    el("strong", {}, e.message || "The request failed."),
    el("span", { class: "code" }, [e.code, err && err.status ? `HTTP ${err.status}` : ""].filter(Boolean).join(" · ")));
  box.append(head);
  const details = Array.isArray(e.details) ? e.details : [];
  if (details.length) {
    const ul = el("ul", { class: "details" });
    for (const d of details.slice(0, 50)) ul.append(el("li", {}, describeDetail(d)));
    if (details.length > 50) ul.append(el("li", { class: "muted" }, `… and ${details.length - 50} more`));
    box.append(ul);
  }
  box.hidden = false;
}

function describeDetail(d) {
  if (d === null || typeof d !== "object") return String(d);
  const where = d.field || (d.index !== undefined ? `paras[${d.index}]` : "");
  const parts = [];
  if (where) parts.push(where);
  if (d.value !== undefined) parts.push(`“${typeof d.value === "string" ? d.value : JSON.stringify(d.value)}”`);
  const why = d.reason || d.message || "";
  const rest = Object.entries(d).filter(([k]) => !["field", "index", "value", "reason", "message"].includes(k))
    .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`);
  let s = parts.join(" ");
  if (why) s += (s ? ": " : "") + why;
  if (rest.length) s += (s ? " (" : "") + rest.join(", ") + (s ? ")" : "");
  return s || JSON.stringify(d);
}

function hideBox(box) { box.hidden = true; box.replaceChildren(); }

// ---- Server-Sent Events over fetch ------------------------------------------
//
// EventSource cannot send headers, so the streams are read with fetch:
// the credentials go in the IM-API-KEY header (or the cookie).

class Stream {
  constructor(url, { onEvent, onState }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onState = onState;
    this.ctrl = null;
    this.stopped = false;
    this.retry = 2000;
  }

  start() { this.loop(); return this; }

  stop() {
    this.stopped = true;
    if (this.ctrl) this.ctrl.abort();
  }

  async loop() {
    while (!this.stopped) {
      this.ctrl = new AbortController();
      try {
        await this.read(this.ctrl.signal);
        if (this.stopped) return;
        this.onState("retrying", null);
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof APIError && (e.status === 401 || e.status === 403 || e.status === 400)) {
          this.onState("error", e);
          return;
        }
        this.onState("retrying", e);
      }
      await new Promise((r) => setTimeout(r, this.retry));
    }
  }

  async read(signal) {
    const res = await fetch(this.url, {
      headers: { Accept: "text/event-stream", ...authHeaders() },
      credentials: "same-origin", cache: "no-store", signal,
    });
    if (!res.ok) throw await envelopeError(res);
    this.onState("connected", null);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "", name = "", data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          if (data.length) this.dispatch(name || "message", data.join("\n"));
          name = ""; data = [];
        } else if (line.startsWith(":")) {
          // a comment: keep-alive
        } else {
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i);
          let v = i < 0 ? "" : line.slice(i + 1);
          if (v.startsWith(" ")) v = v.slice(1);
          if (field === "event") name = v;
          else if (field === "data") data.push(v);
          else if (field === "retry" && /^\d+$/.test(v)) this.retry = Number(v);
        }
      }
    }
  }

  dispatch(name, raw) {
    let v;
    try { v = JSON.parse(raw); } catch { return; }
    try { this.onEvent(name, v); } catch (e) { console.error(e); }
  }
}

// ---- formatting -------------------------------------------------------------

function fmtTime(s) {
  if (!s) return "";
  const d = new Date(s);
  return isNaN(d) ? s : d.toLocaleString();
}

function fmtDuration(sec) {
  if (!isFinite(sec) || sec < 0) return "";
  if (sec < 60) return `${Math.ceil(sec)} s`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ${Math.round(sec % 60)} s`;
  return `${Math.floor(sec / 3600)} h ${Math.round((sec % 3600) / 60)} min`;
}

function fmtNum(n) { return Number(n || 0).toLocaleString("en-US"); }

function progressOf(b) {
  const count = b.count || 0;
  if (!count) return 100;
  return Math.floor(((count - (b.pending || 0)) * 100) / count);
}

const SEGMENTS = ["sent", "failed", "canceled", "recalled"];

// bar draws sent / failed / canceled / recalled segments; the rest is pending.
function renderBar(bar, b) {
  const count = b.count || 0;
  const pct = progressOf(b);
  bar.dataset.progress = String(pct);
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-valuenow", String(pct));
  if (bar.children.length !== SEGMENTS.length + 1) {
    bar.replaceChildren(...SEGMENTS.map((s) => el("span", { class: `seg ${s}` })), el("span", { class: "label" }));
  }
  SEGMENTS.forEach((s, i) => {
    const w = count ? ((b[s] || 0) * 100) / count : 0;
    bar.children[i].style.width = `${w}%`;
  });
  bar.children[SEGMENTS.length].textContent = `${pct} %`;
  bar.title = [...SEGMENTS, "pending"].map((s) => `${s} ${fmtNum(b[s])}`).join(" · ");
}

// readRateText is the read rate beside the progress bar: read ÷ delivered.
function readRateText(b) {
  if (b.read === undefined || b.readRate === undefined) return "";
  const delivered = (b.sent || 0) + (b.recalled || 0);
  if (!delivered) return "read —";
  return `read ${(b.readRate * 100).toFixed(1)} % (${fmtNum(b.read)} of ${fmtNum(delivered)})`;
}

// ---- rate and ETA -------------------------------------------------------------

const samples = new Map(); // batchID → { t0, d0, t, d }

function observe(b) {
  const done = (b.count || 0) - (b.pending || 0);
  const now = Date.now();
  const s = samples.get(b.batchID);
  if (!s || done < s.d0) samples.set(b.batchID, { t0: now, d0: done, t: now, d: done });
  else { s.t = now; s.d = done; }
}

function rateText(b) {
  if (b.status === "scheduled") return b.sendAt ? `starts ${fmtTime(b.sendAt)}` : "scheduled";
  if (b.status === "paused") return "paused: nothing new starts until it is resumed";
  if (FINISHED.has(b.status)) {
    if (b.finishedAt && b.createdAt && b.status !== "canceled" && b.status !== "recalled") {
      const start = new Date(b.sendAt || b.createdAt), end = new Date(b.finishedAt);
      const sec = (end - start) / 1000;
      return sec > 0 ? `took ${fmtDuration(sec)}` : "done";
    }
    return "—";
  }
  const s = samples.get(b.batchID);
  let rate = 0;
  if (s && s.t - s.t0 >= 500 && s.d > s.d0) rate = ((s.d - s.d0) * 1000) / (s.t - s.t0);
  const parts = [];
  if (rate > 0) parts.push(`${fmtNum(Math.round(rate))}/s`);
  if (b.estimatedFinishAt) {
    const left = (new Date(b.estimatedFinishAt) - Date.now()) / 1000;
    parts.push(`ETA ${left > 0 ? fmtDuration(left) : "now"} (paced)`);
  } else if (rate > 0) {
    parts.push(`ETA ${fmtDuration((b.pending || 0) / rate)}`);
  }
  return parts.join(" · ") || (b.status === "queued" ? "waiting for a worker" : "…");
}

// ---- the batch list ------------------------------------------------------------

let listStream = null;
let listRows = [];     // the last page, newest first
let detailID = "";     // the batch shown in detail
let detail = null;     // its last status

function setStreamState(state, err) {
  const pill = $("stream-status");
  pill.dataset.state = state;
  pill.textContent = { connected: "live", retrying: "reconnecting…", error: "not signed in", idle: "not connected" }[state] || state;
  if (state === "error" && err) {
    showError($("batches-error"), err);
  } else if (state === "connected") {
    hideBox($("batches-error"));
  }
}

function connectList() {
  if (listStream) listStream.stop();
  listStream = null;
  if (!sessionAuth && !apiKey()) {
    setStreamState("idle");
    $("stream-status").textContent = "enter an API key";
    return;
  }
  const q = new URLSearchParams();
  if (detailID) q.set("batch", detailID);
  if (view === "queue") q.set("queue", "true");
  const url = "batch-events" + (q.size ? `?${q}` : "");
  listStream = new Stream(url, {
    onState: setStreamState,
    onEvent: (name, v) => {
      if (name === "batches") {
        listRows = v.batches || [];
        hideBox($("batches-error"));
        renderList();
      } else if (name === "batch") {
        updateDetail(v);
      } else if (name === "queue") {
        renderQueue(v);
      } else if (name === "apierror") {
        if (v.of === "batch") showError($("d-action-result"), new APIError(v.status, v.error));
        else if (v.of === "queue") showError($("q-error"), new APIError(v.status, v.error));
        else showError($("batches-error"), new APIError(v.status, v.error));
        if (v.of === "auth") setStreamState("error", new APIError(v.status, v.error));
      }
    },
  }).start();
}

function renderList() {
  const tbody = $("batches").tBodies[0];
  const seen = new Set();
  let prev = null;
  for (const b of listRows) {
    observe(b);
    seen.add(b.batchID);
    let tr = tbody.querySelector(`tr[data-batch="${CSS.escape(b.batchID)}"]`);
    if (!tr) {
      tr = el("tr", { dataset: { batch: b.batchID } },
        el("td", {}, el("button", { type: "button", class: "link", textContent: b.batchID, onclick: () => go(batchHash(b.batchID)) }),
          el("div", { class: "muted small created" })),
        el("td", {}, el("span", { class: "status" })),
        el("td", {}, el("div", { class: "bar" })),
        el("td", { class: "rate" }));
    }
    // keep the API's order: newest first
    if (prev ? prev.nextSibling !== tr : tbody.firstChild !== tr) {
      if (prev) prev.after(tr); else tbody.prepend(tr);
    }
    prev = tr;
    tr.dataset.status = b.status;
    tr.dataset.progress = String(progressOf(b));
    tr.classList.toggle("selected", b.batchID === detailID);
    tr.querySelector(".created").textContent = `${fmtNum(b.count)} recipient${b.count === 1 ? "" : "s"} · ${fmtTime(b.createdAt)}`;
    const st = tr.querySelector(".status");
    st.textContent = b.status;
    st.dataset.status = b.status;
    renderBar(tr.querySelector(".bar"), b);
    tr.querySelector(".rate").textContent = rateText(b);
    if (b.batchID === detailID) updateDetail(b);
  }
  for (const tr of [...tbody.rows]) if (!seen.has(tr.dataset.batch)) tr.remove();
  $("batches-empty").hidden = listRows.length > 0;
}

// ---- a batch in detail -----------------------------------------------------------

let recOffset = 0;
let recHistory = [];   // offsets of the pages before
let recNext = null;
let recTimer = null;

function batchHash(id) { return `#/batches/${encodeURIComponent(id)}`; }

function openDetail(id) {
  detailID = id;
  detail = null;
  recOffset = 0; recHistory = []; recNext = null;
  $("r-status").value = "";
  $("r-read").value = "";
  $("detail").hidden = false;
  $("d-id").textContent = id;
  $("d-link").href = batchHash(id);
  $("d-status").textContent = "";
  $("d-content").hidden = true;
  $("recipients").tBodies[0].replaceChildren();
  recPage = null;
  hideBox($("d-action-result"));
  const b = listRows.find((x) => x.batchID === id);
  if (b) updateDetail(b);
  for (const tr of $("batches").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.batch === id);
  connectList(); // the stream now follows this batch too
  loadRecipients();
  $("detail").scrollIntoView({ block: "nearest" });
}

function closeDetail() {
  if (!detailID) return;
  detailID = "";
  detail = null;
  $("detail").hidden = true;
  for (const tr of $("batches").tBodies[0].rows) tr.classList.remove("selected");
  connectList();
}

function updateDetail(b) {
  if (b.batchID !== detailID) return;
  const before = detail;
  detail = b;
  observe(b);
  $("d-status").textContent = b.status;
  $("d-status").dataset.status = b.status;
  renderBar($("d-bar"), b);
  const dl = $("d-counters");
  dl.replaceChildren();
  for (const k of ["count", "sent", "failed", "canceled", "recalled", "pending", "pushFailed", "read"]) {
    dl.append(el("dt", {}, k), el("dd", { id: `d-${k}`, class: k }, b[k] === undefined ? "—" : fmtNum(b[k])));
  }
  $("d-read").textContent = readRateText(b);
  const times = [`created ${fmtTime(b.createdAt)}`];
  if (b.sendAt) times.push(`send at ${fmtTime(b.sendAt)}`);
  if (b.estimatedFinishAt) times.push(`estimated finish ${fmtTime(b.estimatedFinishAt)}`);
  if (b.finishedAt) times.push(`finished ${fmtTime(b.finishedAt)}`);
  if (b.canceledAt) times.push(`canceled ${fmtTime(b.canceledAt)}`);
  if (b.recalledAt) times.push(`recalled ${fmtTime(b.recalledAt)}`);
  if (b.pausedAt) times.push(`paused ${fmtTime(b.pausedAt)}`);
  const rate = rateText(b);
  if (!FINISHED.has(b.status) && rate) times.push(rate);
  $("d-times").textContent = times.join(" · ");
  $("cancel").disabled = FINISHED.has(b.status);
  $("recall").disabled = b.status === "recalled";
  $("pause").disabled = FINISHED.has(b.status) || b.status === "paused";
  $("resume").disabled = b.status !== "paused";
  if (b.message !== undefined) renderContent(b); // the list's entries have no content
  if (b.sender && !(before && before.sender)) renderRecipients(); // rooms can be named now
  const changed = !before || ["sent", "failed", "canceled", "recalled", "pending", "status", "read"].some((k) => before[k] !== b[k]);
  if (before && changed) scheduleRecipients();
}

// renderContent shows what the batch sends and who created it.
function renderContent(b) {
  $("d-message").textContent = b.message;
  $("d-type").textContent = b.messageType || "";
  $("d-sender").textContent = b.sender || "";
  $("d-created-by").textContent = b.createdBy ? b.createdBy : "an operator (API key)";
  $("d-push").textContent = b.push ? `yes${b.skipTotalBadge ? ", without the total badge" : ""}` : "no";
  $("d-send-at").textContent = b.sendAt ? fmtTime(b.sendAt) : "at once";
  $("d-rate").textContent = b.ratePerMinute ? `${fmtNum(b.ratePerMinute)} recipients a minute` : "as fast as the workers go";
  for (const [k, v] of [["extra", b.extra], ["fields", b.fields]]) {
    $(`d-${k}`).textContent = v === undefined ? "" : JSON.stringify(v, null, 2);
    $(`d-${k}-label`).hidden = $(`d-${k}-value`).hidden = v === undefined;
  }
  $("d-content").hidden = false;
}

// roomNames are the names GET room-names gave for the rooms of the pages
// shown (Options.RoomNames); a room it cannot name shows by its ID.
const roomNamesOn = cfg.roomNames === "true";
const roomNames = new Map();

// roomLabel names the room of recipient r: a receiver's is the one-on-one
// room of the batch's sender and the receiver; a room para's is its name
// with the start of its ID, when the host names it.
function roomLabel(r) {
  if (!r.room) return "";
  if (r.receiver && detail && detail.sender) return `${detail.sender} ↔ ${r.receiver}`;
  const name = roomNames.get(r.room);
  if (name) return `${name} (${r.room.slice(0, 8)}…)`;
  return r.room;
}

// loadRoomNames asks once for the names of the page's room paras not
// asked about yet and shows the page again with them.
async function loadRoomNames(page) {
  if (!roomNamesOn) return;
  const ids = [...new Set(page.recipients.filter((r) => r.room && !r.receiver && !roomNames.has(r.room)).map((r) => r.room))].slice(0, 200);
  if (!ids.length) return;
  for (const id of ids) roomNames.set(id, ""); // asked: not again
  const q = new URLSearchParams();
  for (const id of ids) q.append("id", id);
  try {
    const res = await fetch(`room-names?${q}`, {
      headers: { Accept: "application/json", ...authHeaders() },
      credentials: "same-origin", cache: "no-store",
    });
    if (!res.ok) return;
    const body = await res.json();
    const names = body && body.names && typeof body.names === "object" ? body.names : {};
    for (const id of ids) if (typeof names[id] === "string") roomNames.set(id, names[id]);
  } catch {
    return; // the rooms show by ID
  }
  if (recPage === page) renderRecipients();
}

function scheduleRecipients() {
  if (recTimer) return;
  recTimer = setTimeout(() => { recTimer = null; loadRecipients(); }, 1000);
}

let recPage = null; // the page shown

function renderRecipients() {
  if (!recPage) return;
  $("recipients").tBodies[0].replaceChildren(...recPage.recipients.map((r) => el("tr", { dataset: { status: r.status, read: r.readAt ? "true" : "false" } },
    el("td", {}, String(r.index)),
    el("td", {}, r.receiver || ""),
    el("td", { class: r.receiver || roomNames.get(r.room) ? "" : "mono", title: r.room || "" }, roomLabel(r)),
    el("td", {}, el("span", { class: "status", dataset: { status: r.status } }, r.status)),
    el("td", { class: "read", title: r.readAt || "" }, r.readAt ? `read ${fmtTime(r.readAt)}` : (r.status === "sent" ? "unread" : "")),
    el("td", {}, [r.error, r.push ? `push ${r.push}` : "", r.pushError].filter(Boolean).join(" · ")))));
}

async function loadRecipients() {
  const id = detailID;
  if (!id) return;
  const q = new URLSearchParams({ limit: "50", offset: String(recOffset) });
  const st = $("r-status").value;
  if (st) q.set("status", st);
  const rd = $("r-read").value; // the API takes read or status, not both
  if (rd && !st) q.set("read", rd);
  try {
    const page = await api("GET", `${batchPath}/${encodeURIComponent(id)}/recipients?${q}`);
    if (id !== detailID) return;
    hideBox($("r-error"));
    recNext = page.nextOffset === undefined ? null : page.nextOffset;
    recPage = page;
    renderRecipients();
    loadRoomNames(page);
    const last = page.recipients.length ? page.recipients[page.recipients.length - 1].index : recOffset;
    $("r-range").textContent = page.recipients.length
      ? `#${page.recipients[0].index}–#${last} of ${fmtNum(page.total)}${st ? ` ${st}` : ""}${rd && !st ? (rd === "true" ? " read" : " unread") : ""}`
      : `none of ${fmtNum(page.total)}${st ? ` ${st}` : ""}${rd && !st ? (rd === "true" ? " read" : " unread") : ""}`;
    $("r-prev").disabled = recHistory.length === 0;
    $("r-next").disabled = recNext === null;
  } catch (e) {
    if (id === detailID) showError($("r-error"), e);
  }
  loadFailures(id);
}

async function loadFailures(id) {
  if (!detail || !detail.failed) { $("d-failures").hidden = true; return; }
  try {
    const page = await api("GET", `${batchPath}/${encodeURIComponent(id)}/recipients?status=failed&limit=20`);
    if (id !== detailID) return;
    $("failures").replaceChildren(...page.recipients.map((r) =>
      el("li", {}, el("strong", {}, `#${r.index} ${r.receiver || r.room || ""}`), `: ${r.error || "failed"}`)));
    if (page.total > page.recipients.length) $("failures").append(el("li", { class: "muted" }, `… ${fmtNum(page.total - page.recipients.length)} more (filter the table by failed)`));
    $("d-failures").hidden = false;
  } catch { /* the table shows the error */ }
}

async function act(method, suffix, label) {
  const id = detailID;
  const box = $("d-action-result");
  hideBox(box);
  try {
    const b = await api(method, `${batchPath}/${encodeURIComponent(id)}${suffix}`);
    box.className = "notice";
    box.replaceChildren(el("p", {}, `${label}: the batch is ${b.status}.`));
    box.hidden = false;
    const i = listRows.findIndex((x) => x.batchID === id);
    if (i >= 0) { listRows[i] = b; renderList(); }
    updateDetail(b);
    loadRecipients();
  } catch (e) {
    box.className = "error-box";
    showError(box, e);
  }
}

// ---- the composer -------------------------------------------------------------------

function randomKey() {
  const a = new Uint8Array(16);
  crypto.getRandomValues(a);
  return "dash-" + Array.from(a, (x) => x.toString(16).padStart(2, "0")).join("");
}

// One Idempotency-Key per body: a double click sends once.
let idemKey = "", idemBody = null;

function composeReset() {
  hideBox($("compose-error"));
  hideBox($("compose-result"));
  $("preview").hidden = true;
}

async function dryRun() {
  composeReset();
  try {
    const r = await api("POST", `${batchPath}?dryRun=true&previewLimit=10`, $("body").value);
    const bits = [`${fmtNum(r.count)} recipients in ${fmtNum(r.chunks)} chunk${r.chunks === 1 ? "" : "s"}, sent as ${r.sender}`];
    if (r.sendAt) bits.push(`at ${fmtTime(r.sendAt)}`);
    if (r.ratePerMinute) bits.push(`paced at ${fmtNum(r.ratePerMinute)}/min`);
    if (r.estimatedFinishAt) bits.push(`finishing about ${fmtTime(r.estimatedFinishAt)}`);
    $("preview-summary").textContent = bits.join(", ") + (r.count > r.preview.length ? `; the first ${r.preview.length}:` : ":");
    $("preview-rows").replaceChildren(...r.preview.map((m) => el("tr", {},
      el("td", {}, String(m.index)),
      el("td", {}, m.receiver ? m.receiver : `room ${m.room}`),
      el("td", { class: "message" }, m.message))));
    $("preview").hidden = false;
  } catch (e) {
    showError($("compose-error"), e);
  }
}

async function send() {
  composeReset();
  $("send").disabled = true;
  try {
    const body = $("body").value;
    if (body !== idemBody) { idemKey = randomKey(); idemBody = body; }
    const r = await api("POST", batchPath, body, { "Idempotency-Key": idemKey });
    idemBody = null;
    const box = $("compose-result");
    box.replaceChildren(el("p", {}, `Accepted ${r.batchID}: ${fmtNum(r.count)} recipients.`));
    box.hidden = false;
    go(batchHash(r.batchID));
  } catch (e) {
    showError($("compose-error"), e);
  } finally {
    $("send").disabled = false;
  }
}

// ---- the live message view ----------------------------------------------------------

let liveStream = null;
let liveUser = "";
const rooms = new Map();   // room ID → display name
const shown = new Set();   // message IDs on the page (delivery is at least once)
let roomsReload = null;

function roomName(id) { return rooms.get(id) || id; }

async function loadRooms() {
  const user = liveUser;
  try {
    const r = await api("GET", `${liveBase}/users/${encodeURIComponent(user)}/rooms`);
    if (user !== liveUser) return [];
    rooms.clear();
    const details = new Map((r.roomDetails || []).map((d) => [d.room, d]));
    for (const id of r.rooms) {
      const d = details.get(id);
      let name = id;
      if (d && d.direct && d.members && d.members.length === 2) name = d.members.join(" ↔ ");
      else if (d && d.members && d.members.length) name = `${id} (${d.members.join(", ")})`;
      rooms.set(id, name);
    }
    $("rooms").replaceChildren(...r.rooms.map((id) => el("li", { dataset: { room: id }, title: id }, roomName(id))));
    for (const li of $("messages").children) li.querySelector(".room").textContent = roomName(li.dataset.room);
    return r.rooms;
  } catch (e) {
    setLiveState("error", e);
    return [];
  }
}

function setLiveState(state, err) {
  const pill = $("live-status");
  pill.dataset.state = state;
  pill.textContent = {
    connected: `watching ${liveUser}`, retrying: "reconnecting…", idle: "not watching",
    error: err ? `${err.error ? err.error.code + ": " : ""}${err.message}` : "error",
  }[state] || state;
}

function addMessage(m) {
  if (shown.has(m.id)) return;
  shown.add(m.id);
  if (!rooms.has(m.room) && !roomsReload) {
    // a room the list does not show yet (a first message in a new one-on-one room)
    roomsReload = setTimeout(() => { roomsReload = null; loadRooms(); }, 200);
  }
  const meta = el("div", { class: "meta" },
    el("span", { class: "room" }, roomName(m.room)), " · from ", el("span", {}, m.sender), " · ",
    el("time", { dateTime: m.createdAt }, new Date(m.createdAt).toLocaleTimeString()));
  if (m.messageType && m.messageType !== "text") meta.append(" · ", el("span", { class: "type" }, m.messageType));
  const li = el("li", { class: "message", dataset: { id: m.id, room: m.room, created: m.createdAt } },
    meta, el("div", { class: "text" }, m.message));
  // A rich message's fields (originalUrl, sticker, mentions…), as text:
  // never a link or an image, whose URL the page would then load or open.
  const fields = Object.entries(m.fields || {});
  if (fields.length) {
    li.append(el("ul", { class: "fields" }, ...fields.map(([k, v]) => {
      const s = JSON.stringify(v);
      return el("li", {}, el("span", { class: "field" }, k), " ", s.length > 200 ? s.slice(0, 200) + "…" : s);
    })));
  }
  const list = $("messages");
  let before = null;
  for (const x of list.children) {
    if (new Date(x.dataset.created) <= new Date(m.createdAt)) { before = x; break; }
  }
  list.insertBefore(li, before);
  while (list.children.length > liveLimit) {
    const last = list.lastElementChild;
    last.remove();
  }
  if (shown.size > liveLimit * 10) {
    // forget the IDs of messages long gone, keep those on the page
    const keep = new Set([...list.children].map((x) => x.dataset.id));
    for (const id of shown) if (!keep.has(id)) shown.delete(id);
  }
}

function removeMessage(m) {
  shown.add(m.id); // a late delivery stays away
  for (const li of [...$("messages").children]) if (li.dataset.id === m.id) li.remove();
}

async function watchUser(ev) {
  if (ev) ev.preventDefault();
  if (liveStream) liveStream.stop();
  liveUser = $("live-user").value.trim();
  shown.clear();
  rooms.clear();
  $("messages").replaceChildren();
  $("rooms").replaceChildren();
  if (!liveUser) return setLiveState("idle");
  const user = liveUser;
  liveStream = new Stream(`${liveBase}/events?user=${encodeURIComponent(user)}`, {
    onState: setLiveState,
    onEvent: (name, v) => {
      if (name === "message") addMessage(v);
      else if (name === "retraction") removeMessage(v);
    },
  }).start();
  const ids = await loadRooms();
  for (const id of ids) {
    try {
      const r = await api("GET", `${liveBase}/rooms/${encodeURIComponent(id)}/messages?limit=20`);
      if (user !== liveUser) return;
      for (const m of r.messages) addMessage(m);
    } catch { /* shown by the stream state */ }
  }
}

// ---- CSV ---------------------------------------------------------------------------------
//
// parseCSV reads RFC 4180 CSV: fields separated by commas, records by CRLF
// or LF (a lone CR too), fields in double quotes may hold commas, line
// breaks and doubled quotes (""); a leading byte order mark is dropped.
// It returns the records, each with the line it starts on (from 1), and
// the syntax errors, each with its line. Blank lines are skipped.

function parseCSV(text) {
  if (text.startsWith("\uFEFF")) text = text.slice(1);
  const records = [], errors = [];
  let line = 1, i = 0;
  const n = text.length;
  while (i < n) {
    const start = line;
    const fields = [];
    let bad = false;
    for (;;) {
      let field = "";
      if (text[i] === '"') {
        i++;
        let closed = false;
        while (i < n) {
          const c = text[i];
          if (c === '"') {
            if (text[i + 1] === '"') { field += '"'; i += 2; continue; }
            i++; closed = true; break;
          }
          if (c === "\n" || (c === "\r" && text[i + 1] !== "\n")) line++;
          field += c; i++;
        }
        if (!closed) {
          errors.push({ line: start, fatal: true, message: "a quoted field is not closed: a double quote is missing (the rest of the file was read into it)" });
          bad = true;
          break;
        }
        if (i < n && text[i] !== "," && text[i] !== "\n" && text[i] !== "\r") {
          errors.push({ line, message: "text after the closing quote of a field: quote the whole field, and write a quote inside it as \"\"" });
          bad = true;
          while (i < n && text[i] !== "\n" && text[i] !== "\r") i++;
        }
      } else {
        while (i < n && text[i] !== "," && text[i] !== "\n" && text[i] !== "\r") {
          if (text[i] === '"' && !bad) {
            errors.push({ line, message: "a double quote inside an unquoted field: quote the whole field, and write a quote inside it as \"\"" });
            bad = true;
          }
          field += text[i]; i++;
        }
      }
      fields.push(field);
      if (i < n && text[i] === ",") { i++; continue; }
      break;
    }
    // the end of the record
    if (i < n && text[i] === "\r") i++;
    if (i < n && text[i] === "\n") i++;
    line++;
    if (bad) continue;
    if (fields.length === 1 && fields[0].trim() === "") continue; // a blank line
    records.push({ line: start, fields });
  }
  return { records, errors };
}

// recipientsFromCSV turns CSV text into paras: a receiver or room column,
// every other column a $variable$ ("name" and "$name$" both mean $name$).
// It returns the paras, the CSV line of each, and every problem with its
// line; a problem marked fatal (the header, an unclosed quote) leaves no
// recipient to trust, the others leave their line out.
function recipientsFromCSV(text) {
  const { records, errors } = parseCSV(text);
  const paras = [], lines = [];
  if (!records.length) {
    if (!errors.length) errors.push({ line: 1, fatal: true, message: "no recipients: paste or upload a CSV with a header line (receiver or room, then variables) and a line per recipient" });
    return { paras, lines, errors };
  }
  const header = records[0];
  const cols = [];
  const seen = new Map();
  let who = 0;
  header.fields.forEach((raw, j) => {
    const h = raw.trim();
    const lower = h.toLowerCase();
    let col;
    if (lower === "receiver" || lower === "room") { col = { kind: lower }; who++; }
    else if (h === "" ) { errors.push({ line: header.line, fatal: true, message: `column ${j + 1} of the header has no name` }); col = { kind: "skip" }; }
    else {
      const name = /^\$[^$]+\$$/.test(h) ? h : `$${h}$`;
      if (name.slice(1, -1).includes("$")) {
        errors.push({ line: header.line, fatal: true, message: `column ${j + 1}: “${h}” is not a variable name (a name has no $ inside)` });
        col = { kind: "skip" };
      } else col = { kind: "var", name };
    }
    const key = col.kind === "var" ? col.name : col.kind;
    if (col.kind !== "skip") {
      if (seen.has(key)) errors.push({ line: header.line, fatal: true, message: `column ${j + 1} repeats column ${seen.get(key) + 1} (${key})` });
      else seen.set(key, j);
    }
    cols.push(col);
  });
  if (who === 0) errors.push({ line: header.line, fatal: true, message: "the header has no receiver or room column: name the column of user IDs “receiver” (or of room IDs “room”)" });
  for (const rec of records.slice(1)) {
    if (rec.fields.length !== cols.length) {
      errors.push({ line: rec.line, message: `${rec.fields.length} fields, but the header has ${cols.length}` });
      continue;
    }
    const p = {};
    rec.fields.forEach((v, j) => {
      const c = cols[j];
      if (c.kind === "receiver" || c.kind === "room") { if (v.trim() !== "") p[c.kind] = v.trim(); }
      else if (c.kind === "var") p[c.name] = v;
    });
    if (who > 0 && !p.receiver && !p.room) {
      errors.push({ line: rec.line, message: "no receiver or room" });
      continue;
    }
    if (paras.length === maxRecipients) {
      errors.push({ line: rec.line, message: `more recipients than one request may have (${fmtNum(maxRecipients)}): split the file` });
      break;
    }
    paras.push(p);
    lines.push(rec.line);
  }
  return { paras, lines, errors };
}

// ---- the form composer ---------------------------------------------------------------------

// One Idempotency-Key per composed request: the same request sent twice
// (a double click, a retry after a timeout, Send after Send) is one batch.
let formKey = "", formBody = null;

// composeForm builds the request from the form and the CSV. It returns
// { body, lines, errors }: body is null when the form itself is wrong.
function composeForm() {
  const errors = [];
  const req = { messageType: $("f-type").value.trim(), message: $("f-message").value };
  if (!req.message.trim()) errors.push({ field: "message", message: "write the message" });
  if (!req.messageType) errors.push({ field: "type", message: "give a message type, such as text" });
  const sender = $("f-sender").value.trim();
  if (sender) req.sender = sender;
  if ($("f-push").checked) req.push = true;
  const extra = $("f-extra").value.trim();
  if (extra) {
    try {
      req.extra = JSON.parse(extra);
      if (req.extra === null || typeof req.extra !== "object" || Array.isArray(req.extra)) errors.push({ field: "extra", message: "must be a JSON object, such as {\"coupon\": \"$code$\"}" });
    } catch (e) { errors.push({ field: "extra", message: `is not JSON: ${e.message}` }); }
  }
  const at = $("f-send-at").value;
  if (at) {
    const d = new Date(at); // local time
    if (isNaN(d)) errors.push({ field: "send at", message: "is not a time" });
    else req.sendAt = d.toISOString();
  }
  const rate = $("f-rate").value.trim();
  if (rate) {
    const r = Number(rate);
    if (!Number.isInteger(r) || r < 1) errors.push({ field: "rate", message: "must be a whole number of recipients a minute, at least 1" });
    else req.ratePerMinute = r;
  }
  const csv = recipientsFromCSV($("f-csv").value);
  req.paras = csv.paras;
  $("f-rows").textContent = csv.paras.length ? `${fmtNum(csv.paras.length)} recipient${csv.paras.length === 1 ? "" : "s"}` : "";
  return { req, body: JSON.stringify(req), lines: csv.lines, errors: errors.concat(csv.errors) };
}

// locate maps the API's error details onto CSV lines (paras[i] is the
// recipient on lines[i]) and form fields.
function locate(err, lines) {
  const e = err instanceof APIError ? err.error : { code: "ERROR", message: String(err && err.message || err), details: [] };
  const out = [];
  for (const d of Array.isArray(e.details) ? e.details : []) {
    let i = d && typeof d.index === "number" ? d.index : null;
    const m = d && typeof d.field === "string" ? /^paras\[(\d+)\]/.exec(d.field) : null;
    if (i === null && m) i = Number(m[1]);
    if (i !== null && i < lines.length) {
      // "paras[3].receiver" is the receiver column of line lines[3]
      const rest = m ? d.field.slice(m[0].length).replace(/^\./, "") : "";
      out.push({ line: lines[i], message: describeDetail({ ...d, index: undefined, field: rest || undefined }) });
    } else {
      out.push({ message: describeDetail(d) });
    }
  }
  return { code: e.code, status: err && err.status, message: e.message, located: out };
}

// showProblems lists problems by CSV line, then by field.
function showProblems(title, code, problems) {
  const box = $("f-errors");
  box.replaceChildren();
  box.dataset.code = code || "";
  box.append(el("p", { class: "error-title" }, el("strong", {}, title), code ? el("span", { class: "code" }, code) : null));
  const sorted = [...problems].sort((a, b) => (a.line || 0) - (b.line || 0));
  const ul = el("ul", { class: "details", id: "f-problems" });
  for (const p of sorted.slice(0, 100)) {
    ul.append(el("li", { dataset: { line: p.line ? String(p.line) : "" } },
      p.line ? el("strong", {}, `line ${p.line}: `) : (p.field ? el("strong", {}, `${p.field}: `) : null), p.message));
  }
  if (sorted.length > 100) ul.append(el("li", { class: "muted" }, `… and ${sorted.length - 100} more`));
  if (sorted.length) box.append(ul);
  box.hidden = false;
}

function formReset() {
  hideBox($("f-errors"));
  hideBox($("f-result"));
  $("f-preview-box").hidden = true;
}

// previewRounds bounds the dry runs of one preview: after a refusal that
// names recipients (a receiver that does not exist, an ID too long), the
// preview runs again without them, so that it shows the rows that would
// go and locates the problems of several kinds at once.
const previewRounds = 4;

async function formPreview() {
  formReset();
  const c = composeForm();
  if (!c.req.paras.length || c.errors.some((e) => e.field || e.fatal)) {
    showProblems(`${c.errors.length} problem${c.errors.length === 1 ? "" : "s"} to fix before a preview`, "", c.errors);
    return;
  }
  const problems = [...c.errors];
  let paras = c.req.paras, lines = c.lines, r = null, last = null;
  for (let round = 0; round < previewRounds && paras.length; round++) {
    try {
      r = await api("POST", `${batchPath}?dryRun=true&previewLimit=10`, JSON.stringify({ ...c.req, paras }));
      break;
    } catch (e) {
      const l = locate(e, lines);
      last = l;
      problems.push(...l.located);
      const bad = new Set(l.located.filter((p) => p.line).map((p) => lines.indexOf(p.line)));
      if (!bad.size) break; // not about recipients: nothing to preview
      paras = paras.filter((_, i) => !bad.has(i));
      lines = lines.filter((_, i) => !bad.has(i));
    }
  }
  if (r) {
    const bits = [`${fmtNum(r.count)} recipients in ${fmtNum(r.chunks)} chunk${r.chunks === 1 ? "" : "s"}, sent as ${r.sender}`];
    if (r.sendAt) bits.push(`at ${fmtTime(r.sendAt)}`);
    if (r.ratePerMinute) bits.push(`paced at ${fmtNum(r.ratePerMinute)}/min`);
    if (r.estimatedFinishAt) bits.push(`finishing about ${fmtTime(r.estimatedFinishAt)}`);
    $("f-preview-summary").textContent = bits.join(", ") + (r.count > r.preview.length ? `; the first ${r.preview.length}:` : ":");
    $("f-preview-rows").replaceChildren(...r.preview.map((m) => el("tr", { dataset: { line: String(lines[m.index]) } },
      el("td", {}, String(lines[m.index])),
      el("td", {}, m.receiver ? m.receiver : `room ${m.room}`),
      el("td", { class: "message" }, m.message))));
    $("f-preview-box").hidden = false;
  }
  if (problems.length || !r) {
    const n = new Set(problems.filter((p) => p.line).map((p) => p.line)).size;
    const title = r ? `${n} line${n === 1 ? "" : "s"} left out of the preview: fix ${n === 1 ? "it" : "them"} before sending`
      : (last ? last.message : "nothing to preview");
    showProblems(title, r ? "" : last && last.code, problems);
  }
}

async function formSend() {
  formReset();
  const c = composeForm();
  if (c.errors.length) {
    showProblems(`${c.errors.length} problem${c.errors.length === 1 ? "" : "s"} to fix before sending; nothing was sent`, "", c.errors);
    return;
  }
  $("f-send").disabled = true;
  try {
    if (c.body !== formBody) { formKey = randomKey(); formBody = c.body; }
    const { result: r, res } = await apiRaw("POST", batchPath, c.body, { "Idempotency-Key": formKey });
    const replayed = res.headers.get("Idempotent-Replayed") === "true";
    const box = $("f-result");
    box.replaceChildren(el("p", {}, replayed ? `Already sent as ${r.batchID} (${fmtNum(r.count)} recipients): this request was sent before, so it was not sent again. ` : `Accepted ${r.batchID}: ${fmtNum(r.count)} recipients. `,
      el("a", { href: batchHash(r.batchID), id: "f-result-link" }, "Open the batch")));
    box.dataset.replayed = String(replayed);
    box.dataset.batch = r.batchID;
    box.hidden = false;
  } catch (e) {
    const l = locate(e, c.lines);
    showProblems(`${l.message}; nothing was sent`, l.code, l.located);
  } finally {
    $("f-send").disabled = false;
  }
}

function formToJSON() {
  const c = composeForm();
  $("body").value = JSON.stringify(c.req, null, 2);
  go("#/batches");
}

async function readCSVFile() {
  const f = $("f-file").files[0];
  if (!f) return;
  try {
    const buf = await f.arrayBuffer();
    // fatal: a file that is not UTF-8 (a spreadsheet's "CSV" in a legacy
    // encoding) is refused rather than garbled; the BOM is kept for the
    // parser to drop.
    $("f-csv").value = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(buf);
    formReset();
    composeForm();
  } catch (e) {
    showProblems(`${f.name} is not UTF-8 text: save it as “CSV UTF-8” and upload it again`, "", []);
  }
  $("f-file").value = "";
}

function startForm() {
  $("f-max").textContent = fmtNum(maxRecipients);
  $("f-preview").addEventListener("click", formPreview);
  $("f-send").addEventListener("click", formSend);
  $("f-to-json").addEventListener("click", formToJSON);
  $("f-file").addEventListener("change", readCSVFile);
  $("f-csv").addEventListener("input", () => { $("f-rows").textContent = ""; });
}

// ---- history -------------------------------------------------------------------------------

let histCursors = []; // the cursors of the pages before ("" for the first)
let histNext = "";

// historyParams reads the filters of a #/history?… fragment.
function historyParams(query) {
  const q = new URLSearchParams(query);
  return { status: q.getAll("status"), from: q.get("from") || "", to: q.get("to") || "", limit: q.get("limit") || "50", cursor: q.get("cursor") || "" };
}

function historyHash(p) {
  const q = new URLSearchParams();
  for (const s of p.status) q.append("status", s);
  if (p.from) q.set("from", p.from);
  if (p.to) q.set("to", p.to);
  if (p.limit && p.limit !== "50") q.set("limit", p.limit);
  if (p.cursor) q.set("cursor", p.cursor);
  return `#/history${q.size ? `?${q}` : ""}`;
}

// dayStart is the start of a local date (YYYY-MM-DD), plus days.
function dayStart(s, days) {
  const [y, m, d] = s.split("-").map(Number);
  return new Date(y, m - 1, d + (days || 0));
}

let histParams = null;

async function loadHistory(p) {
  histParams = p;
  for (const box of $("h-filters").querySelectorAll('input[name="status"]')) box.checked = p.status.includes(box.value);
  $("h-from").value = p.from;
  $("h-to").value = p.to;
  $("h-limit").value = p.limit;
  const q = new URLSearchParams({ limit: p.limit });
  for (const s of p.status) q.append("status", s);
  if (p.from) q.set("createdAfter", new Date(dayStart(p.from).getTime() - 1).toISOString());
  if (p.to) q.set("createdBefore", dayStart(p.to, 1).toISOString());
  if (p.cursor) q.set("cursor", p.cursor);
  try {
    const page = await api("GET", `${batchPath}?${q}`);
    if (histParams !== p) return;
    hideBox($("h-error"));
    histNext = page.nextCursor || "";
    $("h-table").tBodies[0].replaceChildren(...page.batches.map((b) => el("tr", { dataset: { batch: b.batchID, status: b.status } },
      el("td", {}, el("a", { href: batchHash(b.batchID), class: "mono" }, b.batchID)),
      el("td", {}, el("span", { class: "status", dataset: { status: b.status } }, b.status)),
      el("td", {}, fmtTime(b.createdAt)),
      el("td", {}, fmtNum(b.count)),
      el("td", {}, `${fmtNum(b.sent)} · ${fmtNum(b.failed)}`),
      el("td", {}, b.sender || ""),
      el("td", {}, b.createdBy || "operator"))));
    $("h-empty").hidden = page.batches.length > 0;
    $("h-older").disabled = !histNext;
    $("h-newer").disabled = !p.cursor;
    const n = histCursors.length + 1;
    $("h-page").textContent = `page ${n}${p.cursor && !histCursors.length ? " (from a link)" : ""} · ${page.batches.length} batch${page.batches.length === 1 ? "" : "es"}`;
  } catch (e) {
    if (histParams === p) showError($("h-error"), e);
  }
}

function historyFilters(ev) {
  if (ev) ev.preventDefault();
  histCursors = [];
  go(historyHash({
    status: [...$("h-filters").querySelectorAll('input[name="status"]:checked')].map((x) => x.value),
    from: $("h-from").value, to: $("h-to").value, limit: $("h-limit").value, cursor: "",
  }));
}

async function lookUp(ev) {
  if (ev) ev.preventDefault();
  hideBox($("h-lookup-error"));
  let id = $("h-id").value.trim();
  const m = /#\/batches\/([^/?#]+)/.exec(id); // a pasted link
  if (m) id = decodeURIComponent(m[1]);
  if (!id) return;
  try {
    await api("GET", `${batchPath}/${encodeURIComponent(id)}`);
    go(batchHash(id));
  } catch (e) {
    showError($("h-lookup-error"), e);
  }
}

function startHistory() {
  $("h-filters").addEventListener("submit", historyFilters);
  $("h-clear").addEventListener("click", () => { histCursors = []; go("#/history"); });
  $("h-lookup").addEventListener("submit", lookUp);
  $("h-older").addEventListener("click", () => {
    if (!histNext || !histParams) return;
    histCursors.push(histParams.cursor);
    go(historyHash({ ...histParams, cursor: histNext }));
  });
  $("h-newer").addEventListener("click", () => {
    if (!histParams) return;
    const prev = histCursors.length ? histCursors.pop() : "";
    go(historyHash({ ...histParams, cursor: prev }));
  });
}

// ---- the queue -----------------------------------------------------------------------------

function renderQueue(q) {
  hideBox($("q-error"));
  $("q-name").textContent = q.queue;
  $("q-paused").hidden = !q.paused;
  const cards = [
    ["pending", q.pending, "waiting for a worker"], ["scheduled", q.scheduled, "waiting for their time"],
    ["active", q.active, "being sent"], ["retry", q.retry, "failed, will retry"], ["archived", q.archived, "given up"],
    ["latency", q.latencyMS < 1000 ? `${q.latencyMS} ms` : fmtDuration(q.latencyMS / 1000), "oldest pending task"],
    ["workers", `${fmtNum(q.busyWorkers)} / ${fmtNum(q.concurrency)}`, `busy, in ${q.servers} process${q.servers === 1 ? "" : "es"}`],
    ["today", `${fmtNum(q.processedToday)} · ${fmtNum(q.failedToday)}`, "processed · failed"],
  ];
  $("q-cards").replaceChildren(...cards.map(([k, v, note]) => el("div", { class: `card ${k}`, id: `q-card-${k}`, dataset: { value: String(typeof v === "number" ? v : v) } },
    el("div", { class: "label" }, k), el("div", { class: "value" }, typeof v === "number" ? fmtNum(v) : v), el("div", { class: "muted small" }, note))));
  renderTasks("q-archived", q.archivedTasks, "Re-run", (t) => t.lastFailedAt ? fmtTime(t.lastFailedAt) : "");
  renderTasks("q-retry", q.retryTasks, "Run now", (t) => t.nextProcessAt ? fmtTime(t.nextProcessAt) : "");
  renderTasks("q-active", q.activeTasks, "", () => "");
}

function renderTasks(id, tasks, action, when) {
  tasks = tasks || [];
  $(id).tBodies[0].replaceChildren(...tasks.map((t) => el("tr", { dataset: { task: t.id, state: t.state } },
    el("td", { class: "mono" }, t.id),
    el("td", {}, el("a", { href: batchHash(t.batchID), class: "mono" }, t.batchID), ` · ${t.chunk}`),
    el("td", {}, `${t.retried} / ${t.maxRetry}`),
    el("td", { class: "error-text" }, t.lastError || ""),
    el("td", {}, when(t)),
    el("td", {}, action ? el("button", { type: "button", class: "secondary run", onclick: (ev) => runTask(t.id, ev.currentTarget) }, action) : ""))));
  $(`${id}-empty`).hidden = tasks.length > 0;
  $(id).hidden = tasks.length === 0;
}

async function loadQueue() {
  try {
    renderQueue(await api("GET", `${batchPath}/-/queue`));
  } catch (e) {
    showError($("q-error"), e);
  }
}

async function runTask(id, button) {
  const box = $("q-action-result");
  hideBox(box);
  button.disabled = true;
  try {
    const t = await api("POST", `${batchPath}/-/queue/tasks/${encodeURIComponent(id)}/run`);
    box.className = "notice";
    box.replaceChildren(el("p", {}, `Task ${t.id} (batch ${t.batchID}, chunk ${t.chunk}) is ${t.state}: a worker runs it next.`));
    box.hidden = false;
  } catch (e) {
    box.className = "error-box";
    showError(box, e);
  }
  loadQueue();
}

// ---- views ---------------------------------------------------------------------------------

let view = "batches";

// go moves to a fragment; route does the rest (also for Back and links).
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route() {
  const h = location.hash.replace(/^#/, "") || "/batches";
  const [path, query] = h.split("?");
  const parts = path.split("/").filter(Boolean);
  let next = parts[0] || "batches";
  if (!["batches", "compose", "history", "queue"].includes(next)) next = "batches";
  const changed = next !== view;
  view = next;
  $("main").dataset.view = view;
  for (const s of document.querySelectorAll("main > [data-views]")) s.classList.toggle("off", !s.dataset.views.split(" ").includes(view));
  for (const a of $("nav").querySelectorAll("a")) a.classList.toggle("current", a.dataset.view === view);
  const titles = { batches: "", compose: "Compose", history: "History", queue: "Queue" };
  document.title = [titles[view], document.body.dataset.title].filter(Boolean).join(" · ");
  const first = !routed;
  routed = true;
  if (view === "batches") {
    const id = parts[1] ? decodeURIComponent(parts.slice(1).join("/")) : "";
    if (id && id !== detailID) { openDetail(id); return; } // openDetail reconnects
    if (!id && detailID) { closeDetail(); return; }
  }
  loadView(query || "");
  if (changed || first) connectList(); // the stream carries the queue in the queue view only
}

let routed = false;

// loadView reads what the view shows that is not streamed.
function loadView(query) {
  if (view === "history") loadHistory(historyParams(query));
  if (view === "queue") loadQueue();
}

// ---- start ----------------------------------------------------------------------------

function useKey(ev) {
  if (ev) ev.preventDefault();
  const v = $("api-key").value.trim();
  try { if (v) sessionStorage.setItem(KEY_STORAGE, v); else sessionStorage.removeItem(KEY_STORAGE); } catch { /* private mode */ }
  connectList();
  loadView((location.hash.split("?")[1]) || "");
  if (liveStream) watchUser();
}

function forgetKey() {
  try { sessionStorage.removeItem(KEY_STORAGE); } catch { /* private mode */ }
  $("api-key").value = "";
  if (liveStream) { liveStream.stop(); liveStream = null; setLiveState("idle"); }
  connectList();
}

if (!sessionAuth) {
  $("key-form").addEventListener("submit", useKey);
  $("key-forget").addEventListener("click", forgetKey);
  const stored = apiKey();
  if (stored) $("api-key").value = stored;
  else if ($("api-key").value) {
    // the demo key: no typing needed
    try { sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim()); } catch { /* private mode */ }
  }
}
$("dry-run").addEventListener("click", dryRun);
$("send").addEventListener("click", send);
$("cancel").addEventListener("click", () => act("DELETE", "", "Canceled"));
$("recall").addEventListener("click", () => act("POST", "/recall", "Recalled"));
$("pause").addEventListener("click", () => act("POST", "/pause", "Paused"));
$("resume").addEventListener("click", () => act("POST", "/resume", "Resumed"));
$("close-detail").addEventListener("click", () => go("#/batches"));
$("r-status").addEventListener("change", () => { $("r-read").value = ""; recOffset = 0; recHistory = []; loadRecipients(); });
$("r-read").addEventListener("change", () => { $("r-status").value = ""; recOffset = 0; recHistory = []; loadRecipients(); });
$("r-next").addEventListener("click", () => { if (recNext !== null) { recHistory.push(recOffset); recOffset = recNext; loadRecipients(); } });
$("r-prev").addEventListener("click", () => { if (recHistory.length) { recOffset = recHistory.pop(); loadRecipients(); } });
if (cfg.live === "true") $("live-form").addEventListener("submit", watchUser);
startForm();
startHistory();
window.addEventListener("hashchange", route);
route();
