// The SDK against a real system: two `wedsync api` processes, NATS, PostgreSQL and the
// conflicts worker, started by tests/test_sdk.py, which passes in:
//   WEDSYNC_SDK_BASES    the gateways' base URLs, comma separated
//   WEDSYNC_SDK_WEDDING  a wedding; WEDSYNC_SDK_USERS: "user=jwt,user=jwt" (couple, planner)
//   WEDSYNC_SDK_ADMIN    the admin token (to close sockets from the server side)
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { MemoryStorage, createClient } from "../../dist/index.js";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through tests/test_sdk.py`);
  return value;
};
const bases = env("WEDSYNC_SDK_BASES").split(",");
const wedding = env("WEDSYNC_SDK_WEDDING");
const users = env("WEDSYNC_SDK_USERS").split(",").map((pair) => pair.split("="));
const admin = env("WEDSYNC_SDK_ADMIN");
const [[coupleId, coupleJwt], [plannerId, plannerJwt]] = users;
const fast = { base: 20, cap: 200 };

/** A WebSocket whose "network" can be cut: while `offline`, every socket fails to open. */
function switchable() {
  const net = { offline: false };
  net.WebSocket = class extends WebSocket {
    constructor(url, protocols) {
      super(net.offline ? "ws://127.0.0.1:9/" : url, protocols); // port 9: nothing there
    }
  };
  return net;
}

/** Resolves with the first value of the room's `name` events that `predicate` accepts. */
function until(room, name, predicate = () => true, timeout = 15_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${name} in time`));
    }, timeout);
    const off = room.on(name, (value) => {
      if (!predicate(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

async function eventually(check, timeout = 15_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function api(method, path, jwt, body) {
  const r = await fetch(`${bases[0]}${path}`, {
    method, headers: { Authorization: `Bearer ${jwt}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${text}`);
  return JSON.parse(text);
}

const disconnect = (user, body) =>
  api("POST", `/api/admin/weddings/${wedding}/users/${user}/disconnect`, admin, body);

const couple = switchable();
const clients = [];
let a, b; // the couple on the first gateway, the planner on the second

before(async () => {
  const ca = createClient({ baseUrl: bases[0], getToken: () => coupleJwt, WebSocket: couple.WebSocket,
    backoff: fast, storage: new MemoryStorage() });
  const cb = createClient({ baseUrl: bases[1 % bases.length], getToken: () => plannerJwt, backoff: fast });
  clients.push(ca, cb);
  a = ca.enter(wedding);
  b = cb.enter(wedding);
  await Promise.all([a.ready, b.ready]);
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
});

test("both members are open, know their roles, and see each other", async () => {
  assert.equal(a.connectionStatus.state, "open");
  assert.equal(a.role, "couple");
  assert.equal(b.role, "planner");
  await eventually(() => a.others.some((u) => u.user_id === plannerId)
    && b.others.some((u) => u.user_id === coupleId));
  const [planner] = a.others.filter((u) => u.user_id === plannerId);
  b.setPresence({ location: "/tasks" });
  await until(a, "others", (o) => o.some((u) => u.user_id === plannerId
    && u.connections.some((c) => c.location === "/tasks")));
  assert.equal(planner.role, "planner");
});

test("a message is acked with the seq the other member receives, once", async () => {
  const got = until(b, "event", (e) => e.event.data.text === "menu?");
  const seq = await a.send("chat", { text: "menu?" });
  const received = await got;
  assert.equal(received.seq, seq);
  assert.equal(received.event.actor.user_id, coupleId);
  await assert.rejects(b.send("nope", { x: 1 }), (e) => e.code === "invalid");
});

test("changes: shown at once, applied, concurrent edits converge with /state", async () => {
  const id = `t-${Date.now()}`;
  const created = a.change("tasks", id, "create", { title: "cake tasting" });
  assert.equal(a.entity("tasks", id).pending, true); // optimistic: before any answer
  assert.equal(a.entity("tasks", id).fields.done, false); // with the server's defaults
  const outcome = await created;
  assert.equal(outcome.status, "applied");
  assert.equal(a.entity("tasks", id).pending, undefined);
  await eventually(() => b.entity("tasks", id)?.version === 1);

  // both edit at once: each outcome arrives, and all three states agree
  const [x, y] = await Promise.all([
    a.change("tasks", id, "update", { title: "tasting at 3" }),
    b.change("tasks", id, "update", { title: "tasting at 4", done: true }),
  ]);
  assert.equal(x.status, "applied");
  assert.equal(y.status, "applied");
  const state = await api("GET", `/api/weddings/${wedding}/state`, coupleJwt);
  await eventually(() => a.lastSeq >= state.seq && b.lastSeq >= state.seq);
  assert.deepStrictEqual(a.confirmed.tasks[id], state.entities.tasks[id]);
  assert.deepStrictEqual(b.confirmed.tasks[id], state.entities.tasks[id]);
  assert.deepStrictEqual(a.entities.tasks[id], state.entities.tasks[id]);
  assert.equal(state.entities.tasks[id].version, 3);
});

test("a rejected change is taken back: the view is rebased on the server's state", async () => {
  const id = `t-dup-${Date.now()}`;
  assert.equal((await a.change("tasks", id, "create", { title: "first" })).status, "applied");
  await eventually(() => b.entity("tasks", id));
  const again = b.change("tasks", id, "create", { title: "second" }, { id: `dup-${id}` });
  assert.equal(b.entity("tasks", id).fields.title, "second"); // optimistic
  const outcome = await again;
  assert.equal(outcome.status, "rejected");
  assert.equal(outcome.reason, "exists");
  assert.equal(outcome.current.fields.title, "first");
  assert.deepStrictEqual(b.entity("tasks", id), b.confirmed.tasks[id]);
  assert.equal(b.entity("tasks", id).fields.title, "first");
  await assert.rejects(a.change("tasks", "bad id!", "create", { title: "x" }),
    (e) => e.code === "invalid");
});

test("a forced close, a network gone: resumed with nothing missed and nothing twice", async () => {
  const seen = [];
  const off = a.on("event", (e) => seen.push(e.seq));
  const connects = a.connects;
  couple.offline = true;
  const reconnecting = until(a, "status", (s) => s.state === "reconnecting");
  await disconnect(coupleId, { reconnect: true, reason: "sdk test" });
  assert.equal((await reconnecting).code, 4005);
  // while the couple is away: 30 messages from the planner and one sent offline
  const sent = [];
  for (let i = 0; i < 30; i++) sent.push(await b.send("chat", { i }));
  const offline = a.send("chat", { text: "written offline" });
  assert.equal(a.unacknowledged, 1);
  couple.offline = false;
  const offlineSeq = await offline;
  await eventually(() => a.lastSeq >= Math.max(offlineSeq, ...sent));
  off();
  assert.equal(a.connects, connects + 1);
  const missed = seen.filter((s) => sent.includes(s));
  assert.deepStrictEqual(missed, sent); // every one, in order, once
  assert.equal(new Set(seen).size, seen.length);
  assert.deepStrictEqual([...seen].sort((p, q) => p - q), seen);
  const page = await api("GET", `/api/weddings/${wedding}/events?after_seq=0&limit=1000`, coupleJwt);
  assert.equal(page.events.filter((e) => e.event.data.text === "written offline").length, 1);
});

test("resumed with recovered: false: the state is reloaded by itself, then live again", async () => {
  // resume from past the wedding's newest event, as from a stream that was recreated
  const resumed = until(a, "resumed");
  const reloaded = until(a, "reload");
  a.lastSeq += 1_000_000;
  a.reconnect();
  const frame = await resumed;
  assert.equal(frame.recovered, false);
  const snapshot = await reloaded;
  assert.equal(a.lastSeq >= frame.last_seq, true);
  const state = await api("GET", `/api/weddings/${wedding}/state`, coupleJwt);
  await eventually(() => a.lastSeq >= state.seq);
  assert.deepStrictEqual(a.confirmed, state.entities);
  assert.ok(snapshot.seq <= state.seq);
  const got = until(a, "event", (e) => e.event.data.text === "after the reload");
  const seq = await b.send("chat", { text: "after the reload" });
  assert.equal((await got).seq, seq);
});

test("after a page reload, queued frames go out again with their ids: stored once", async () => {
  // the outbox and session of a page that sent a message but was reloaded before its ack
  const storage = new MemoryStorage();
  const first = createClient({ baseUrl: bases[0], getToken: () => coupleJwt, storage, backoff: fast });
  const before = first.enter(wedding);
  await before.ready;
  const seq = await before.send("chat", { text: "sent before the reload" }, { id: "reload-1" });
  const { session_id } = await storage.session(wedding);
  await storage.put({ room: wedding, id: "reload-1", order: 1, frozen: true,
    frame: { type: "message", id: "reload-1", channel: "chat", data: { text: "sent before the reload" } } });
  await first.close();
  // the reloaded page: same storage, same session, the frame re-sent and acked as before
  const second = createClient({ baseUrl: bases[1 % bases.length], getToken: () => coupleJwt, storage, backoff: fast });
  clients.push(second);
  const after = second.enter(wedding);
  await after.ready;
  assert.equal((await storage.session(wedding)).session_id, session_id);
  await eventually(async () => (await storage.load(wedding)).length === 0 && after.unacknowledged === 0);
  const page = await api("GET", `/api/weddings/${wedding}/events?after_seq=${seq - 1}&limit=1000`, coupleJwt);
  assert.equal(page.events.filter((e) => e.event.data.text === "sent before the reload").length, 1);
  await after.leave();
});

test("an ended session: the room joins again and carries on", async () => {
  const reconnecting = until(a, "status", (s) => s.state === "reconnecting");
  const open = until(a, "status", (s) => s.state === "open");
  await disconnect(coupleId, { end_sessions: true });
  assert.equal((await reconnecting).code, 4504);
  await open;
  const got = until(b, "event", (e) => e.event.data.text === "back");
  const seq = await a.send("chat", { text: "back" });
  assert.equal((await got).seq, seq);
});

test("leaving closes the room for good", async () => {
  const closed = until(b, "status", (s) => s.state === "closed");
  await b.leave();
  assert.deepStrictEqual(await closed, { state: "closed", code: 1000, reason: "left" });
  await assert.rejects(b.send("chat", { text: "after" }), (e) => e.name === "RoomClosed");
});
