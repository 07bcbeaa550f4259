// Copied from sdk/js/dist by `python -m sdk.demo_bundle`: do not edit.
/** Narrow an event by its type: `if (isEvent(e, "conflict.resolved")) e.data.winner`. */
export function isEvent(e, type) {
    return e.type === type;
}
