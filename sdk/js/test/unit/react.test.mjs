import assert from "node:assert/strict";
import { test } from "node:test";

import { MemoryStorage, createClient } from "../../dist/index.js";
import { createRoomHooks } from "../../dist/react.js";

/** Enough of React to run a hook as one render with its subscription kept. */
function tinyReact() {
  const renders = [];
  return {
    renders,
    useMemo: (make) => make(),
    useSyncExternalStore(subscribe, getSnapshot) {
      subscribe(() => renders.push(getSnapshot()));
      return getSnapshot();
    },
  };
}

test("hooks read the room's snapshots and re-render when they change", async () => {
  // a client whose join never answers: the room stays `connecting` until it is left
  const client = createClient({ baseUrl: "http://127.0.0.1:9", getToken: () => "jwt",
    fetch: () => new Promise(() => undefined), WebSocket: class {}, storage: new MemoryStorage() });
  const react = tinyReact();
  const { useRoom, useConnectionState, useOthers, useEntities } = createRoomHooks(react);
  const room = useRoom(client, "w1");
  assert.equal(room, client.enter("w1")); // one room per client and wedding
  assert.deepStrictEqual(useConnectionState(room), { state: "connecting" });
  assert.deepStrictEqual(useOthers(room), []);
  assert.deepStrictEqual(useEntities(room), {});
  assert.equal(room.entities, room.entities); // stable snapshots: no render loop
  await room.leave();
  assert.deepStrictEqual(react.renders, [{ state: "closed", code: 1000, reason: "left" }]);
});
