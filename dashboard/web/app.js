// The batch dashboard: plain JavaScript, no build step, no dependencies.
// Everything goes through the public HTTP API of the batch handler (and,
// for the live view, the host's live endpoints), authenticated by the
// host's session cookie or by an API key kept in sessionStorage and sent
// as the IM-API-KEY header; never in a URL.
"use strict";

const $ = (id) => document.getElementById(id);
const cfg = document.body.dataset;
const batchPath = cfg.batchPath;
const sessionAuth = cfg.sessionAuth === "true";
const liveBase = cfg.liveBase || "";
const liveLimit = Number(cfg.liveLimit) || 200;
const KEY_STORAGE = "chatbatch.dashboard.apiKey";
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

// api calls the API and returns the envelope's result, or throws APIError.
async function api(method, path, body, headers) {
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
  return env.result;
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
  const url = "batch-events" + (detailID ? `?batch=${encodeURIComponent(detailID)}` : "");
  listStream = new Stream(url, {
    onState: setStreamState,
    onEvent: (name, v) => {
      if (name === "batches") {
        listRows = v.batches || [];
        hideBox($("batches-error"));
        renderList();
      } else if (name === "batch") {
        updateDetail(v);
      } else if (name === "apierror") {
        if (v.of === "batch") showError($("d-action-result"), new APIError(v.status, v.error));
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
        el("td", {}, el("button", { type: "button", class: "link", textContent: b.batchID, onclick: () => openDetail(b.batchID) }),
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

function openDetail(id) {
  detailID = id;
  detail = null;
  recOffset = 0; recHistory = []; recNext = null;
  $("r-status").value = "";
  $("detail").hidden = false;
  $("d-id").textContent = id;
  $("d-status").textContent = "";
  hideBox($("d-action-result"));
  const b = listRows.find((x) => x.batchID === id);
  if (b) updateDetail(b);
  for (const tr of $("batches").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.batch === id);
  connectList(); // the stream now follows this batch too
  loadRecipients();
  $("detail").scrollIntoView({ block: "nearest" });
}

function closeDetail() {
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
  for (const k of ["count", "sent", "failed", "canceled", "recalled", "pending", "pushFailed"]) {
    dl.append(el("dt", {}, k), el("dd", { id: `d-${k}`, class: k }, fmtNum(b[k])));
  }
  const times = [`created ${fmtTime(b.createdAt)}`];
  if (b.sendAt) times.push(`send at ${fmtTime(b.sendAt)}`);
  if (b.estimatedFinishAt) times.push(`estimated finish ${fmtTime(b.estimatedFinishAt)}`);
  if (b.finishedAt) times.push(`finished ${fmtTime(b.finishedAt)}`);
  if (b.canceledAt) times.push(`canceled ${fmtTime(b.canceledAt)}`);
  if (b.recalledAt) times.push(`recalled ${fmtTime(b.recalledAt)}`);
  const rate = rateText(b);
  if (!FINISHED.has(b.status) && rate) times.push(rate);
  $("d-times").textContent = times.join(" · ");
  $("cancel").disabled = FINISHED.has(b.status);
  $("recall").disabled = b.status === "recalled";
  const changed = !before || ["sent", "failed", "canceled", "recalled", "pending", "status"].some((k) => before[k] !== b[k]);
  if (before && changed) scheduleRecipients();
}

function scheduleRecipients() {
  if (recTimer) return;
  recTimer = setTimeout(() => { recTimer = null; loadRecipients(); }, 1000);
}

async function loadRecipients() {
  const id = detailID;
  if (!id) return;
  const q = new URLSearchParams({ limit: "50", offset: String(recOffset) });
  const st = $("r-status").value;
  if (st) q.set("status", st);
  try {
    const page = await api("GET", `${batchPath}/${encodeURIComponent(id)}/recipients?${q}`);
    if (id !== detailID) return;
    hideBox($("r-error"));
    recNext = page.nextOffset === undefined ? null : page.nextOffset;
    const tbody = $("recipients").tBodies[0];
    tbody.replaceChildren(...page.recipients.map((r) => el("tr", { dataset: { status: r.status } },
      el("td", {}, String(r.index)),
      el("td", {}, r.receiver || ""),
      el("td", { class: "mono" }, r.room || ""),
      el("td", {}, el("span", { class: "status", dataset: { status: r.status } }, r.status)),
      el("td", {}, [r.error, r.push ? `push ${r.push}` : "", r.pushError].filter(Boolean).join(" · ")))));
    const last = page.recipients.length ? page.recipients[page.recipients.length - 1].index : recOffset;
    $("r-range").textContent = page.recipients.length
      ? `#${page.recipients[0].index}–#${last} of ${fmtNum(page.total)}${st ? ` ${st}` : ""}`
      : `none of ${fmtNum(page.total)}${st ? ` ${st}` : ""}`;
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
    openDetail(r.batchID);
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
  const li = el("li", { class: "message", dataset: { id: m.id, room: m.room, created: m.createdAt } },
    el("div", { class: "meta" },
      el("span", { class: "room" }, roomName(m.room)), " · from ", el("span", {}, m.sender), " · ",
      el("time", { dateTime: m.createdAt }, new Date(m.createdAt).toLocaleTimeString())),
    el("div", { class: "text" }, m.message));
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

// ---- start ----------------------------------------------------------------------------

function useKey(ev) {
  if (ev) ev.preventDefault();
  const v = $("api-key").value.trim();
  try { if (v) sessionStorage.setItem(KEY_STORAGE, v); else sessionStorage.removeItem(KEY_STORAGE); } catch { /* private mode */ }
  connectList();
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
$("close-detail").addEventListener("click", closeDetail);
$("r-status").addEventListener("change", () => { recOffset = 0; recHistory = []; loadRecipients(); });
$("r-next").addEventListener("click", () => { if (recNext !== null) { recHistory.push(recOffset); recOffset = recNext; loadRecipients(); } });
$("r-prev").addEventListener("click", () => { if (recHistory.length) { recOffset = recHistory.pop(); loadRecipients(); } });
if (cfg.live === "true") $("live-form").addEventListener("submit", watchUser);
connectList();
