// Copied from sdk/js/dist by `python -m sdk.demo_bundle`: do not edit.
/** A tiny typed event emitter: `on` returns the function that removes the listener. */
export class Emitter {
    listeners = new Map();
    on(name, listener) {
        let set = this.listeners.get(name);
        if (set === undefined) {
            set = new Set();
            this.listeners.set(name, set);
        }
        set.add(listener);
        return () => {
            set.delete(listener);
        };
    }
    emit(name, value) {
        for (const listener of [...(this.listeners.get(name) ?? [])]) {
            try {
                listener(value);
            }
            catch (error) {
                // a listener's bug must not break the connection loop
                queueMicrotask(() => {
                    throw error;
                });
            }
        }
    }
}
