// The demo app: plain DOM on the public SDK (the same modules as sdk/js/dist), nothing private.
import { createClient } from "/demo/sdk/index.js";
import { openNotes } from "/demo/notes.js";

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const slug = (name) => name.trim().toLowerCase().replace(/[^a-z0-9_.-]+/g, "-").replace(/^-+|-+$/g, "") || "guest";
const newId = (prefix) => `${prefix}-${Math.random().toString(36).slice(2, 10)}`;

let me; // { user_id, name, token }
let client;
let room;

function show(view) {
  for (const id of ["signin", "lobby", "room"]) $("#" + id).hidden = id !== view;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

// -- sign in (development only: POST /api/dev/token) -----------------------------------

async function signIn(name, userId = slug(name)) {
  const r = await fetch("/api/dev/token", {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ user_id: userId, name }),
  });
  if (!r.ok) throw new Error(`sign-in failed: ${r.status} ${await r.text()}`);
  const { token } = await r.json();
  me = { user_id: userId, name, token };
  sessionStorage.setItem("wedsync-demo-me", JSON.stringify(me));
  client = createClient({
    baseUrl: location.origin,
    getToken: () => me.token,
    pingInterval: 5000, // a dead socket is noticed within 10 s
    backoff: { base: 250, cap: 2000 }, // a demo reconnects quickly
  });
  $("#who").textContent = `${name} (${userId})`;
}

function knownWeddings() {
  return JSON.parse(localStorage.getItem(`wedsync-demo-weddings-${me.user_id}`) ?? "[]");
}

function remember(wedding) {
  const known = knownWeddings().filter((w) => w.id !== wedding.id);
  localStorage.setItem(`wedsync-demo-weddings-${me.user_id}`, JSON.stringify([wedding, ...known].slice(0, 10)));
}

function lobby() {
  show("lobby");
  $("#known").replaceChildren(...knownWeddings().map((w) =>
    el("li", {}, el("a", { href: `?wedding=${w.id}`, onclick: (e) => { e.preventDefault(); enter(w.id); } }, w.name))));
}

// -- the room --------------------------------------------------------------------------

const chat = new Map(); // seq -> message: the history page and live events, each once
const conflicts = [];

function renderStatus() {
  const s = room?.connectionStatus ?? { state: "closed" };
  const status = $("#status");
  status.dataset.state = s.state;
  status.dataset.connects = String(room?.connects ?? 0);
  status.textContent = s.state + (s.code ? ` (${s.code}${s.reason ? ": " + s.reason : ""})` : "");
  const pending = room?.unacknowledged ?? 0;
  $("#pending").textContent = `${pending} pending`;
  $("#pending").dataset.count = String(pending);
}

function editorsOf(kind, id, others) {
  const names = [];
  for (const u of others) {
    if (u.user_id === room.userId) continue;
    if (u.connections.some((c) => c.editing?.entity === kind && c.editing?.entity_id === id)) {
      names.push(u.display_name ?? u.user_id);
    }
  }
  return names.length ? `✎ ${names.join(", ")}` : "";
}

function renderOthers() {
  const others = room.others;
  $("#others").replaceChildren(...others.map((u) => {
    const c = u.connections[0];
    const editing = u.connections.find((x) => x.editing)?.editing;
    const what = editing ? ` — editing ${editing.entity} ${editing.entity_id}${editing.field ? "." + editing.field : ""}` : "";
    return el("li", { dataset: { user: u.user_id } },
      `${u.display_name ?? u.user_id} (${u.role}) `, el("span", { className: "muted" }, `${c?.status ?? ""}${what}`));
  }));
  renderTasks(); // the editing hints
}

function sorted(kind, by) {
  const all = room.entities[kind] ?? {};
  return Object.entries(all).sort(([a, x], [b, y]) => String(x.fields[by] ?? a).localeCompare(String(y.fields[by] ?? b)));
}

function renderTasks() {
  const list = $("#tasks");
  const others = room.others;
  const rows = new Map([...list.children].map((li) => [li.dataset.id, li]));
  const wanted = [];
  for (const [id, task] of sorted("tasks", "title")) {
    let li = rows.get(id);
    if (!li) {
      const title = el("input", { className: "title", value: task.fields.title ?? "" });
      title.addEventListener("focus", () => room.setPresence({ editing: { entity: "tasks", entity_id: id, field: "title" } }));
      title.addEventListener("blur", () => room.setPresence({ editing: null }));
      title.addEventListener("change", () => void change("tasks", id, "update", { title: title.value }));
      const done = el("input", { type: "checkbox", className: "done" });
      done.addEventListener("change", () => void change("tasks", id, "update", { done: done.checked }));
      li = el("li", { dataset: { id } }, done, " ", title, " ", el("span", { className: "editors" }), " ", el("span", { className: "pending" }));
    }
    const title = li.querySelector(".title");
    if (document.activeElement !== title) title.value = task.fields.title ?? "";
    li.querySelector(".done").checked = Boolean(task.fields.done);
    li.dataset.title = task.fields.title ?? "";
    li.dataset.version = String(task.version);
    li.querySelector(".editors").textContent = editorsOf("tasks", id, others);
    li.querySelector(".pending").textContent = task.pending ? "saving…" : "";
    wanted.push(li);
  }
  list.replaceChildren(...wanted);
}

function renderSimple(kind, selector, line) {
  $(selector).replaceChildren(...sorted(kind, kind === "timeline" ? "start" : "name").map(([id, e]) =>
    el("li", { dataset: { id } }, line(e.fields), " ", el("span", { className: "pending" }, e.pending ? "saving…" : ""))));
}

function renderEntities() {
  renderTasks();
  renderSimple("timeline", "#timeline", (f) => `${(f.start ?? "").slice(11, 16)} ${f.title ?? ""}`);
  renderSimple("guests", "#guests", (f) => `${f.name ?? ""} — ${f.rsvp ?? "pending"}`);
}

function renderChat() {
  const items = [...chat.entries()].sort(([a], [b]) => a - b);
  $("#chat").replaceChildren(...items.map(([seq, m]) =>
    el("li", { dataset: { seq: String(seq) } }, el("b", {}, m.who + ": "), m.text)));
  $("#chat").lastElementChild?.scrollIntoView({ block: "nearest" });
}

function renderConflicts() {
  $("#conflicts").replaceChildren(...conflicts.slice(-8).map((text) => el("li", {}, text)));
}

function onEvent(seq, event) {
  if (event.type === "message" && event.channel === "chat") {
    chat.set(seq, { who: event.actor?.display_name ?? event.actor?.user_id ?? "?", text: String(event.data.text ?? "") });
    renderChat();
  } else if (event.type === "conflict.resolved") {
    const d = event.data;
    conflicts.push(`${d.entity} ${d.entity_id}.${d.field}: ${d.winner.user_id}'s ${JSON.stringify(d.winner.value)} ` +
      `won over ${d.overwritten.user_id ?? "?"}'s ${JSON.stringify(d.overwritten.value)}`);
    renderConflicts();
  } else if (event.type === "conflict.rejected") {
    const d = event.data;
    conflicts.push(`${d.entity} ${d.entity_id}: a change was rejected (${d.reason})`);
    renderConflicts();
  }
}

async function change(kind, id, op, fields) {
  try {
    const outcome = await room.change(kind, id, op, fields);
    if (outcome.status === "rejected") {
      conflicts.push(`your change of ${kind} ${id} was rejected (${outcome.reason}): showing the server's version`);
      renderConflicts();
    }
  } catch (error) {
    conflicts.push(`refused: ${error.message}`);
    renderConflicts();
  }
}

async function loadChatHistory() {
  let after = 0;
  for (let page = 0; page < 20; page++) {
    const body = await client.request("GET", `/api/weddings/${room.weddingId}/events?after_seq=${after}`);
    for (const item of body.events) {
      if (item.event && !item.unreadable) onEvent(item.seq, item.event);
    }
    if (body.next_after_seq == null) return;
    after = body.next_after_seq;
  }
}

async function enter(weddingId) {
  const wedding = await client.request("GET", `/api/weddings/${weddingId}`);
  remember({ id: weddingId, name: wedding.name });
  history.replaceState(null, "", `?wedding=${weddingId}`);
  document.title = `${wedding.name} — WedSync demo`;
  show("room");
  room = client.enter(weddingId);
  window.wedsyncRoom = room; // for the browser tests and the console
  room.on("status", renderStatus);
  room.on("entities", () => { renderEntities(); renderStatus(); });
  room.on("others", renderOthers);
  room.on("event", ({ seq, event }) => { onEvent(seq, event); renderStatus(); });
  room.on("editingConflict", (f) => {
    conflicts.push(`${f.others.map((o) => o.display_name ?? o.user_id).join(", ")} also editing ${f.entity} ${f.entity_id}.${f.field}`);
    renderConflicts();
  });
  setInterval(renderStatus, 500);
  await room.ready;
  renderEntities();
  renderOthers();
  room.setPresence({ location: "/demo" });
  room.on("signal", onSignal);
  await loadChatHistory();
  openNotes({ weddingId, token: me.token, name: me.name, userId: me.user_id })
    .catch((error) => { $("#notes-status").textContent = error.message; });
}

// -- "typing..." in chat: ephemeral signals (never stored), shown for 5 s unless renewed --

const typing = new Map(); // user id -> { name, until }
function onSignal(f) {
  if (f.kind !== "typing" || f.channel !== "chat") return;
  if (f.active) typing.set(f.user_id, { name: f.display_name ?? f.user_id, until: Date.now() + 5000 });
  else typing.delete(f.user_id);
  renderTyping();
}
function renderTyping() {
  const now = Date.now();
  for (const [id, t] of typing) if (t.until < now) typing.delete(id);
  const names = [...typing.values()].map((t) => t.name);
  $("#typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
  $("#typing").dataset.users = [...typing.keys()].join(" ");
}
setInterval(renderTyping, 1000);
let typingSent = 0;
$("#chat-form input[name=text]").addEventListener("input", () => {
  if (Date.now() - typingSent < 2000) return; // renewed every 2 s while typing
  typingSent = Date.now();
  room?.signal({ kind: "typing", channel: "chat" });
});

// the browser knows before the socket does: drop it at once, and reconnect at once when back
window.addEventListener("offline", () => room?.reconnect());
window.addEventListener("online", () => room?.reconnect());

// -- forms -----------------------------------------------------------------------------

function onSubmit(selector, handler) {
  $(selector).addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const data = Object.fromEntries(new FormData(form));
    try {
      await handler(data, form);
      form.reset();
    } catch (error) {
      alert(error.message);
    }
  });
}

onSubmit("#signin-form", async ({ name }) => { await signIn(name); lobby(); });
onSubmit("#create-form", async ({ name, date }) => {
  const timezone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const w = await client.request("POST", "/api/weddings", { name, date, timezone });
  await enter(w.id);
});
onSubmit("#open-form", async ({ wedding }) => enter(wedding.trim()));
onSubmit("#invite-form", async ({ name, role }) => {
  const userId = slug(name);
  await client.request("PUT", `/api/weddings/${room.weddingId}/members/${userId}`, { role });
  const href = `${location.pathname}?wedding=${room.weddingId}&user=${encodeURIComponent(userId)}&name=${encodeURIComponent(name)}`;
  $("#invite-link").replaceChildren(`${name} is ${role}: `, el("a", { href, target: "_blank" }, `open as ${name}`),
    " (another browser profile or a private window, so each tab signs in as its own user)");
});
onSubmit("#task-form", async ({ title }) => { void change("tasks", newId("t"), "create", { title }); });
onSubmit("#chat-form", async ({ text }) => {
  void room.send("chat", { text });
  typingSent = 0;
  room.signal({ kind: "typing", channel: "chat", active: false });
});
onSubmit("#timeline-form", async ({ title, start }) => {
  const at = new Date(start);
  void change("timeline", newId("tl"), "create", { title, start: at.toISOString(), end: new Date(at.getTime() + 3600e3).toISOString() });
});
onSubmit("#guest-form", async ({ name }) => { void change("guests", newId("g"), "create", { name, rsvp: "pending" }); });

// -- start: ?user=&name= signs in (invite links, tests); else the session's user ----------

async function start() {
  const saved = JSON.parse(sessionStorage.getItem("wedsync-demo-me") ?? "null");
  if (params.get("user")) await signIn(params.get("name") ?? params.get("user"), params.get("user"));
  else if (saved) await signIn(saved.name, saved.user_id);
  else return show("signin");
  if (params.get("wedding")) await enter(params.get("wedding"));
  else lobby();
}
start().catch((error) => { $("#status").textContent = error.message; });
