import assert from "node:assert/strict";
import { test } from "node:test";

import { StateStore } from "../../dist/index.js";

const event = (type, entity_id, version, fields = {}) => ({
  id: `${type}-${version}`, type, channel: "tasks", actor: { user_id: "u", role: "couple" },
  data: { entity: "tasks", entity_id, version, fields }, ts: 0,
});

test("a pending create shows at once, filled in with the server's defaults", () => {
  const store = new StateStore();
  store.addPending({ id: "c1", entity: "tasks", entity_id: "t1", op: "create", fields: { title: "cake" } });
  assert.deepStrictEqual(store.view().tasks.t1, {
    version: 0, pending: true, fields: { assignee: null, due: null, done: false, title: "cake" },
  });
  assert.deepStrictEqual(store.confirmed, {}); // the server's state is untouched
});

test("pending updates apply over the confirmed state and are rebased on what arrives", () => {
  const store = new StateStore();
  store.load({ tasks: { t1: { version: 1, fields: { title: "a", done: false } } } });
  store.addPending({ id: "c1", entity: "tasks", entity_id: "t1", op: "update", fields: { done: true } });
  assert.deepStrictEqual(store.view().tasks.t1.fields, { title: "a", done: true });
  // someone else renamed it meanwhile: the pending edit stays on top of their version
  store.fold(event("entity.updated", "t1", 2, { title: "b", done: false }));
  assert.deepStrictEqual(store.view().tasks.t1, { version: 2, pending: true, fields: { title: "b", done: true } });
  // the change was rejected: dropped, the view is the server's state again
  store.removePending("c1");
  assert.deepStrictEqual(store.view().tasks.t1, { version: 2, fields: { title: "b", done: false } });
});

test("a pending delete hides the entity; an update of an entity not held shows nothing", () => {
  const store = new StateStore();
  store.load({ tasks: { t1: { version: 1, fields: { title: "a" } } } });
  store.addPending({ id: "d", entity: "tasks", entity_id: "t1", op: "delete", fields: {} });
  store.addPending({ id: "u", entity: "tasks", entity_id: "t9", op: "update", fields: { title: "x" } });
  assert.deepStrictEqual(store.view(), { tasks: {} });
  assert.equal(store.earlierOn("u"), undefined);
  store.addPending({ id: "d2", entity: "tasks", entity_id: "t1", op: "update", fields: { title: "z" } });
  assert.equal(store.earlierOn("d2").id, "d"); // waits for the delete's outcome
});
