// chatbatchd's page: connect as a user, list their rooms, show messages
// live from GET /events (Server-Sent Events), send a batch and watch its
// progress. Plain JavaScript, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let source = null;
let progressTimer = null;
const shown = new Set(); // message IDs already on the page (delivery is at-least-once)

function key() { return $("api-key").value.trim(); }

async function api(method, path, body) {
  const headers = { "IM-API-KEY": key() };
  if (body !== undefined) headers["Content-Type"] = "application/json; charset=utf-8";
  const res = await fetch(path, { method, headers, body });
  const json = await res.json().catch(() => ({ RC: res.status, RM: res.statusText }));
  return { status: res.status, json };
}

function addMessage(m) {
  if (shown.has(m.id)) return;
  shown.add(m.id);
  const li = document.createElement("li");
  li.className = "message";
  li.dataset.id = m.id;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `${m.room} · from ${m.sender} · ${new Date(m.createdAt).toLocaleTimeString()}`;
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = m.message;
  li.append(meta, text);
  $("messages").prepend(li);
}

// removeMessage takes a recalled message off the page.
function removeMessage(m) {
  shown.add(m.id); // a late delivery of it stays away
  for (const li of $("messages").querySelectorAll("li.message")) {
    if (li.dataset.id === m.id) li.remove();
  }
}

async function loadRooms(user) {
  const { status, json } = await api("GET", `/users/${encodeURIComponent(user)}/rooms`);
  const list = $("rooms");
  list.replaceChildren();
  if (status !== 200) {
    $("conn-status").textContent = `Could not load rooms: ${json.error ? json.error.message : status}`;
    return [];
  }
  for (const room of json.result.rooms) {
    const li = document.createElement("li");
    li.textContent = room;
    list.append(li);
  }
  return json.result.rooms;
}

async function loadHistory(rooms) {
  const all = [];
  for (const room of rooms) {
    const { status, json } = await api("GET", `/rooms/${encodeURIComponent(room)}/messages?limit=20`);
    if (status === 200) all.push(...json.result.messages);
  }
  all.sort((a, b) => new Date(a.createdAt) - new Date(b.createdAt));
  for (const m of all) addMessage(m);
}

async function connect(ev) {
  ev.preventDefault();
  const user = $("user").value.trim();
  if (source) source.close();
  shown.clear();
  $("messages").replaceChildren();
  $("conn-status").textContent = "Connecting…";
  const rooms = await loadRooms(user);
  source = new EventSource(`/events?user=${encodeURIComponent(user)}&key=${encodeURIComponent(key())}`);
  source.addEventListener("ready", () => {
    $("conn-status").textContent = `Connected as ${user}.`;
    $("conn-status").dataset.state = "connected";
  });
  source.addEventListener("message", (e) => addMessage(JSON.parse(e.data)));
  source.addEventListener("retraction", (e) => removeMessage(JSON.parse(e.data)));
  source.onerror = () => {
    $("conn-status").textContent = "Disconnected; retrying…";
    $("conn-status").dataset.state = "retrying";
  };
  await loadHistory(rooms);
}

async function send(ev) {
  ev.preventDefault();
  const { status, json } = await api("POST", "/messages/batch", $("batch-body").value);
  $("send-result").textContent = `${status}\n${JSON.stringify(json, null, 2)}`;
  if (status === 200) {
    $("batch-id").value = json.result.batchID;
    watch();
  }
}

async function poll() {
  const id = $("batch-id").value.trim();
  if (!id) return;
  const { status, json } = await api("GET", `/messages/batch/${encodeURIComponent(id)}`);
  if (status !== 200) {
    $("p-status").textContent = json.error ? json.error.code : String(status);
    return stopWatching();
  }
  const b = json.result;
  for (const f of ["status", "sent", "failed", "pending", "count"]) $(`p-${f}`).textContent = String(b[f]);
  if (["completed", "completed_with_errors", "canceled"].includes(b.status)) stopWatching();
}

function stopWatching() {
  clearInterval(progressTimer);
  progressTimer = null;
}

function watch(ev) {
  if (ev) ev.preventDefault();
  stopWatching();
  poll();
  progressTimer = setInterval(poll, 500);
}

$("connect-form").addEventListener("submit", connect);
$("send-form").addEventListener("submit", send);
$("progress-form").addEventListener("submit", watch);
