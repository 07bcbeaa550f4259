import type { Status } from "./generated/protocol.js";

/** What idle detection needs of a room. */
export interface PresenceTarget {
  setPresence(update: { status: Status }): void;
}

export interface IdleOptions {
  /** ms without input before the member shows as `idle` (default 60 000) */
  idleAfter?: number;
  /** where input is watched (default: `document`, if there is one) */
  target?: EventTarget;
  /** the input events that count as activity */
  events?: readonly string[];
}

const ACTIVITY = ["pointerdown", "pointermove", "keydown", "wheel", "touchstart", "focus"];

/**
 * Idle detection for a page: no input for `idleAfter` → `status: "idle"`; a hidden page →
 * `away`; the next input (or the page shown again) → `active`, which hands the status back
 * to the server (it demotes quiet devices itself, docs/presence.md). Sends only on
 * transitions. Returns the function that stops watching.
 */
export function watchIdle(room: PresenceTarget, options: IdleOptions = {}): () => void {
  const target = options.target ?? (globalThis as { document?: EventTarget }).document;
  if (target === undefined) return () => undefined; // not a page: nothing to watch
  const idleAfter = options.idleAfter ?? 60_000;
  let status: Status = "active";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const show = (next: Status): void => {
    if (next === status) return;
    status = next;
    try {
      room.setPresence({ status: next });
    } catch {
      // the room is closed: nothing to tell
    }
  };
  const arm = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => show("idle"), idleAfter);
  };
  const active = (): void => {
    show("active");
    arm();
  };
  const visibility = (): void => {
    const hidden = (target as { visibilityState?: string }).visibilityState === "hidden";
    if (hidden) show("away");
    else active();
  };
  const events = options.events ?? ACTIVITY;
  for (const name of events) target.addEventListener(name, active, { passive: true });
  target.addEventListener("visibilitychange", visibility);
  arm();
  return () => {
    if (timer !== undefined) clearTimeout(timer);
    for (const name of events) target.removeEventListener(name, active);
    target.removeEventListener("visibilitychange", visibility);
  };
}
