// Copied from sdk/js/dist by `python -m sdk.demo_bundle`: do not edit.
export class Backoff {
    base;
    cap;
    random;
    constructor(options = {}) {
        this.base = options.base ?? 250;
        this.cap = options.cap ?? 15_000;
        this.random = options.random ?? Math.random;
    }
    /** The longest wait before attempt `attempt` (0 = the first retry). */
    ceiling(attempt) {
        return Math.min(this.cap, this.base * 2 ** Math.min(attempt, 32));
    }
    /** Milliseconds to wait before attempt `attempt`. */
    delay(attempt) {
        return this.random() * this.ceiling(attempt);
    }
}
