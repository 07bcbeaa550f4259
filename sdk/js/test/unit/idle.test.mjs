import assert from "node:assert/strict";
import { test } from "node:test";

import { watchIdle } from "../../dist/index.js";

function page() {
  const target = new EventTarget();
  target.visibilityState = "visible";
  const sent = [];
  return { target, sent, room: { setPresence: (p) => sent.push(p.status) } };
}

const until = (check, timeout = 2000) => new Promise((resolve, reject) => {
  const started = Date.now();
  const poll = () => (check() ? resolve() : Date.now() - started > timeout
    ? reject(new Error("not in time")) : setTimeout(poll, 5));
  poll();
});

test("no input → idle; input → active again; a hidden page → away; only transitions sent", async () => {
  const { target, sent, room } = page();
  const stop = watchIdle(room, { target, idleAfter: 40 });
  target.dispatchEvent(new Event("keydown")); // already active: nothing sent
  assert.deepStrictEqual(sent, []);
  await until(() => sent.length === 1);
  assert.deepStrictEqual(sent, ["idle"]);
  target.dispatchEvent(new Event("pointermove"));
  target.dispatchEvent(new Event("pointermove"));
  assert.deepStrictEqual(sent, ["idle", "active"]);
  target.visibilityState = "hidden";
  target.dispatchEvent(new Event("visibilitychange"));
  target.visibilityState = "visible";
  target.dispatchEvent(new Event("visibilitychange"));
  assert.deepStrictEqual(sent, ["idle", "active", "away", "active"]);
  stop();
  target.visibilityState = "hidden";
  target.dispatchEvent(new Event("visibilitychange")); // no longer watched
  assert.deepStrictEqual(sent, ["idle", "active", "away", "active"]);
});

test("outside a page there is nothing to watch", () => {
  const stop = watchIdle({ setPresence: () => assert.fail("sent") }, { idleAfter: 1 });
  stop();
});
