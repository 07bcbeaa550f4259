import assert from "node:assert/strict";
import { test } from "node:test";

import "fake-indexeddb/auto";
import {
  Backoff, Close, IndexedDBStorage, MemoryStorage, PresenceStore, closeAction, splitFrames,
} from "../../dist/index.js";

test("backoff is exponential with full jitter", () => {
  const b = new Backoff({ base: 100, cap: 5000 });
  assert.deepStrictEqual([0, 1, 2, 3, 4, 5, 6, 7].map((n) => b.ceiling(n)),
    [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
  const delays = Array.from({ length: 300 }, () => b.delay(6));
  assert.ok(delays.every((d) => d >= 0 && d <= 5000));
  assert.ok(Math.min(...delays) < 1000 && Math.max(...delays) > 4000); // spread, not lockstep
});

test("close codes: 4000-4499 reconnect, 4500+ stop, an ended session joins again", () => {
  for (const code of [1001, 1006, 1011, 1012, Close.GOING_AWAY, Close.SLOW_CONSUMER,
    Close.SERVER_ERROR, Close.RECONNECT, Close.AUTH_TIMEOUT, Close.TRY_LATER, 4499]) {
    assert.equal(closeAction(code), "reconnect", String(code));
  }
  assert.equal(closeAction(Close.INVALID_SESSION), "rejoin");
  assert.equal(closeAction(Close.SESSION_ENDED), "rejoin");
  for (const code of [Close.FORBIDDEN, Close.DISCONNECTED, 4999, 1008]) {
    assert.equal(closeAction(code), "stop", String(code));
  }
});

test("batched messages split into frames; what cannot be read is left out", () => {
  const batch = [
    '{"type":"event","seq":1,"event":{"id":"a","type":"message","channel":"chat","actor":{"user_id":"u","role":"couple"},"data":{"text":"a\\nb"},"ts":1}}',
    '{"type":"ack","id":"x","seq":2}', "not json", '{"type":"from_the_future"}', "",
  ].join("\n");
  const frames = splitFrames(batch);
  assert.deepStrictEqual(frames.map((f) => f.type), ["event", "ack"]);
  assert.equal(frames[0].event.data.text, "a\nb"); // an escaped newline is not a separator
  assert.deepStrictEqual(splitFrames('{"type":"pong"}'), [{ type: "pong" }]);
});

const conn = (id, at, extra = {}) => ({
  connection_id: id, status: "active", location: null, editing: null, connected_at: at,
  last_active_at: at, ...extra,
});
const user = (user_id, connections) => ({ user_id, display_name: user_id, role: "couple", connections });

test("presence: others grouped by user, this connection left out, diffs applied", () => {
  const p = new PresenceStore();
  p.reset([user("ann", [conn("me", 1), conn("ann-phone", 2)]), user("bob", [conn("b1", 3)])], "me");
  assert.deepStrictEqual(p.others().map((u) => [u.user_id, u.connections.map((c) => c.connection_id)]),
    [["ann", ["ann-phone"]], ["bob", ["b1"]]]);
  p.apply({ type: "presence_diff", joins: [user("bob", [conn("b2", 4)])],
    leaves: [user("ann", [conn("ann-phone", 2)])],
    updates: [user("bob", [conn("b1", 3, { status: "busy", location: "/tasks" })])] });
  const others = p.others();
  assert.deepStrictEqual(others.map((u) => u.user_id), ["bob"]);
  assert.deepStrictEqual(others[0].connections.map((c) => [c.connection_id, c.status]),
    [["b1", "busy"], ["b2", "active"]]);
  p.apply({ type: "presence_diff", joins: [], updates: [], leaves: [user("bob", [conn("b1", 3), conn("b2", 4)])] });
  assert.deepStrictEqual(p.others(), []);
});

for (const [name, make] of [["memory", () => new MemoryStorage()],
  ["IndexedDB", () => new IndexedDBStorage(`t-${Math.random()}`)]]) {
  test(`${name} storage keeps frames per room in send order, and the session`, async () => {
    const s = make();
    const frame = (id, order, room = "w1") => ({
      room, id, order, frozen: true, frame: { type: "message", id, channel: "chat", data: { id } },
    });
    await s.put(frame("b", 2));
    await s.put(frame("a", 1));
    await s.put(frame("c", 3, "w2"));
    assert.deepStrictEqual((await s.load("w1")).map((f) => f.id), ["a", "b"]);
    await s.delete("w1", "a");
    assert.deepStrictEqual((await s.load("w1")).map((f) => f.frame.data), [{ id: "b" }]);
    assert.equal(await s.session("w1"), undefined);
    const session = { room: "w1", session_token: "t", session_id: "s", websocket_url: "ws://x" };
    await s.setSession("w1", session);
    assert.deepStrictEqual(await s.session("w1"), session);
    await s.setSession("w1", undefined);
    assert.equal(await s.session("w1"), undefined);
  });
}
