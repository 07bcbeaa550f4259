// The shared notes panel: a live Yjs document (`notes`) over the stock y-websocket
// provider, with the others' cursors (awareness). docs/documents.md.
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";

const COLORS = ["#5b3a57", "#2e8b57", "#d98b00", "#1e6fb8", "#b22222"];

export async function openNotes({ weddingId, token, name, userId, onChange = () => {} }) {
  const auth = { "content-type": "application/json", authorization: `Bearer ${token}` };
  const base = `/api/weddings/${weddingId}/documents`;
  let r = await fetch(base, { method: "POST", headers: auth, body: JSON.stringify({ name: "notes" }) });
  if (!r.ok && r.status !== 409) throw new Error(`notes: ${r.status}`);
  r = await fetch(`/api/collaboration/join/${weddingId}`, { method: "POST", headers: auth });
  if (!r.ok) throw new Error(`notes: join ${r.status}`);
  const { session_token } = await r.json();
  const doc = new Y.Doc();
  const text = doc.getText("content");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const provider = new WebsocketProvider(`${scheme}://${location.host}/ws/weddings/${weddingId}/documents`, "notes", doc, {
    protocols: ["wedsync.v1", `wedsync.token.${session_token}`],
    shouldReconnect: (e) => e.code < 4500 || e.code >= 5000, // 4500-4999: terminal
    disableBc: true,
  });
  const color = COLORS[Math.abs([...userId].reduce((h, c) => (h * 31 + c.charCodeAt(0)) | 0, 0)) % COLORS.length];
  provider.awareness.setLocalStateField("user", { name, id: userId, color });

  const area = document.querySelector("#notes-text");
  const status = document.querySelector("#notes-status");
  provider.on("status", ({ status: s }) => { status.dataset.state = s; status.textContent = s; });
  provider.on("sync", (synced) => { if (synced) { status.dataset.state = "synced"; status.textContent = "synced"; } });
  provider.on("closed", ({ code, reason }) => { status.dataset.state = "closed"; status.textContent = `closed (${code}: ${reason})`; });

  // textarea -> Y.Text: the one changed span (common prefix and suffix kept)
  area.addEventListener("input", () => {
    const was = text.toString();
    const now = area.value;
    let start = 0;
    while (start < was.length && start < now.length && was[start] === now[start]) start++;
    let end = 0;
    while (end < was.length - start && end < now.length - start &&
           was[was.length - 1 - end] === now[now.length - 1 - end]) end++;
    doc.transact(() => {
      if (was.length - start - end > 0) text.delete(start, was.length - start - end);
      if (now.length - start - end > 0) text.insert(start, now.slice(start, now.length - end));
    }, "textarea");
    cursor();
  });
  // Y.Text -> textarea, keeping the local selection where it was in the text
  text.observe((event) => {
    if (event.transaction.origin === "textarea") return;
    const [a, b] = [area.selectionStart, area.selectionEnd].map((i) => Y.createRelativePositionFromTypeIndex(text, i));
    area.value = text.toString();
    const [na, nb] = [a, b].map((p) => Y.createAbsolutePositionFromRelativePosition(p, doc)?.index ?? 0);
    if (document.activeElement === area) area.setSelectionRange(na, nb);
    render();
  });
  // our cursor, as a relative position (it stays put while others type before it)
  const cursor = () => {
    const anchor = Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(text, area.selectionStart));
    provider.awareness.setLocalStateField("cursor", { anchor });
  };
  for (const ev of ["keyup", "click", "select", "focus"]) area.addEventListener(ev, cursor);

  function render() {
    const items = [];
    for (const [id, state] of provider.awareness.getStates()) {
      if (id === doc.clientID || !state.user) continue;
      let at = "";
      if (state.cursor?.anchor) {
        const abs = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(state.cursor.anchor), doc);
        if (abs) {
          const before = text.toString().slice(0, abs.index).split("\n");
          at = ` — line ${before.length}, column ${before[before.length - 1].length + 1}`;
        }
      }
      const li = document.createElement("li");
      li.dataset.user = state.user.id ?? "";
      li.style.color = state.user.color ?? "";
      li.textContent = `▏${state.user.name}${at}`;
      items.push(li);
    }
    document.querySelector("#notes-cursors").replaceChildren(...items);
    onChange();
  }
  provider.awareness.on("change", render);
  window.wedsyncNotes = { doc, text, provider }; // for the browser tests and the console
  return provider;
}
