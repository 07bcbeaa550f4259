/**
 * Reconnect delays: exponential backoff with full jitter (the Python client's
 * `client/backoff.py`): `delay(n) = random(0, min(cap, base * 2^n))`, so clients that lost
 * the same server do not come back in lockstep while the expected wait still grows.
 */
export interface BackoffOptions {
  /** Milliseconds: the ceiling of the first wait (default 250). */
  base?: number;
  /** Milliseconds: no wait is longer (default 15 000). */
  cap?: number;
  /** A source of numbers in [0, 1) (default `Math.random`). */
  random?: () => number;
}

export class Backoff {
  readonly base: number;
  readonly cap: number;
  private readonly random: () => number;

  constructor(options: BackoffOptions = {}) {
    this.base = options.base ?? 250;
    this.cap = options.cap ?? 15_000;
    this.random = options.random ?? Math.random;
  }

  /** The longest wait before attempt `attempt` (0 = the first retry). */
  ceiling(attempt: number): number {
    return Math.min(this.cap, this.base * 2 ** Math.min(attempt, 32));
  }

  /** Milliseconds to wait before attempt `attempt`. */
  delay(attempt: number): number {
    return this.random() * this.ceiling(attempt);
  }
}
