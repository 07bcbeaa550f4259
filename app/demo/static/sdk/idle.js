// Copied from sdk/js/dist by `python -m sdk.demo_bundle`: do not edit.
const ACTIVITY = ["pointerdown", "pointermove", "keydown", "wheel", "touchstart", "focus"];
/**
 * Idle detection for a page: no input for `idleAfter` → `status: "idle"`; a hidden page →
 * `away`; the next input (or the page shown again) → `active`, which hands the status back
 * to the server (it demotes quiet devices itself, docs/presence.md). Sends only on
 * transitions. Returns the function that stops watching.
 */
export function watchIdle(room, options = {}) {
    const target = options.target ?? globalThis.document;
    if (target === undefined)
        return () => undefined; // not a page: nothing to watch
    const idleAfter = options.idleAfter ?? 60_000;
    let status = "active";
    let timer;
    const show = (next) => {
        if (next === status)
            return;
        status = next;
        try {
            room.setPresence({ status: next });
        }
        catch {
            // the room is closed: nothing to tell
        }
    };
    const arm = () => {
        if (timer !== undefined)
            clearTimeout(timer);
        timer = setTimeout(() => show("idle"), idleAfter);
    };
    const active = () => {
        show("active");
        arm();
    };
    const visibility = () => {
        const hidden = target.visibilityState === "hidden";
        if (hidden)
            show("away");
        else
            active();
    };
    const events = options.events ?? ACTIVITY;
    for (const name of events)
        target.addEventListener(name, active, { passive: true });
    target.addEventListener("visibilitychange", visibility);
    arm();
    return () => {
        if (timer !== undefined)
            clearTimeout(timer);
        for (const name of events)
            target.removeEventListener(name, active);
        target.removeEventListener("visibilitychange", visibility);
    };
}
