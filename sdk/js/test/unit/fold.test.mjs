// The SDK's fold against vectors made by the Python fold (streams/state.py; regenerated
// by `python -m sdk.codegen`, checked current by tests/test_sdk_types.py).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { StateStore, fold, tombstoneKey } from "../../dist/index.js";

const vectors = JSON.parse(readFileSync(new URL("../vectors/fold.json", import.meta.url), "utf8"));

function tombstoneList(tombstones) {
  return [...tombstones].map(([key, v]) => {
    const at = key.indexOf("/");
    return [key.slice(0, at), key.slice(at + 1), v];
  }).sort((a, b) => (a[0] + "/" + a[1] < b[0] + "/" + b[1] ? -1 : 1));
}

test("there are vectors to fold", () => {
  assert.ok(vectors.length >= 20);
});

for (const v of vectors) {
  test(`fold: ${v.name}`, () => {
    const state = structuredClone(v.initial.entities);
    const tombstones = new Map(v.initial.tombstones.map(([k, i, n]) => [tombstoneKey(k, i), n]));
    for (const event of v.events) fold(state, tombstones, event);
    assert.deepStrictEqual(state, v.expected.entities);
    assert.deepStrictEqual(tombstoneList(tombstones), v.expected.tombstones);
  });
}

test("the store folds like fold, and a reload replaces its state", () => {
  const v = vectors.find((x) => x.name === "events in the loaded snapshot are skipped");
  const store = new StateStore();
  store.load(v.initial.entities);
  for (const event of v.events) store.fold(event);
  assert.deepStrictEqual(store.confirmed, v.expected.entities);
  assert.deepStrictEqual(store.view(), v.expected.entities); // nothing pending
});
