/**
 * A circuit breaker: stop calling a service that keeps failing, probe it again after a cool-down.
 *
 * ```
 * closed ──(breakerAfter consecutive failures, or one timeout)──> open ──(cooldown elapsed)──> half-open
 *   ^                                                              ^                              │
 *   └──────────────────────(probe succeeds)────────────────────────┼──────────────────────────────┘
 *                                                                  └──────(probe fails)───────────┘
 * ```
 *
 * While open, `allow()` is false at once, so callers fall back without touching the network; in half-open
 * exactly one caller (the probe) goes through, and a probe that never reports back is replaced after another
 * cool-down. The same machine as the Python client's `kalibr.intelligence._breaker`.
 */

export type BreakerState = "closed" | "open" | "half-open";

export class CircuitBreaker {
  private failures = 0;
  private openedAt: number | undefined;
  private probeStartedAt: number | undefined;

  constructor(
    private readonly breakerAfter: number,
    private readonly cooldownMs: number,
    private readonly clock: () => number = () => performance.now(),
  ) {}

  get state(): BreakerState {
    if (this.openedAt === undefined) return "closed";
    return this.probeStartedAt === undefined ? "open" : "half-open";
  }

  /** May a call go out now? While open: no, except one probe per cool-down. */
  allow(): boolean {
    if (this.openedAt === undefined) return true;
    const now = this.clock();
    const since = this.probeStartedAt ?? this.openedAt;
    if (now - since < this.cooldownMs) return false;
    this.probeStartedAt = now;
    return true;
  }

  /** Milliseconds until `allow()` may let a probe through (0 when closed). */
  msUntilProbe(): number {
    if (this.openedAt === undefined) return 0;
    return Math.max(0, (this.probeStartedAt ?? this.openedAt) + this.cooldownMs - this.clock());
  }

  recordSuccess(): void {
    this.failures = 0;
    this.openedAt = undefined;
    this.probeStartedAt = undefined;
  }

  /** A timeout opens at once: a hung service costs the caller the timeout once, not `breakerAfter` times. */
  recordFailure(timedOut = false): void {
    this.failures += 1;
    if (timedOut || this.probeStartedAt !== undefined || this.failures >= this.breakerAfter) {
      this.openedAt = this.clock();
      this.probeStartedAt = undefined;
    }
  }
}

/** How the client protects the caller from a slow or dead service. */
export interface Resilience {
  /** Milliseconds a decide waits for the service before using the first path (default 50, or
   * `KALIBR_INTELLIGENCE_TIMEOUT` seconds). */
  decideTimeoutMs: number;
  /** Consecutive fast failures (refused, 5xx) that open the breaker; a timeout opens it at once (default 3). */
  breakerAfter: number;
  /** Milliseconds the breaker stays open before one probe (default 5000). */
  cooldownMs: number;
  /** Milliseconds for everything else: delivering outcomes, policy, insights, updates (default 5000). */
  callTimeoutMs: number;
  /**
   * Fetch a goal's decisions ahead, in batches sized to the call rate (one decide request per many calls of a busy
   * goal), so a call takes one without waiting for the service (default true). Each is the service's own
   * independent draw, at most `decideAheadMaxAgeMs` old when used.
   */
  decideAhead: boolean;
  /** Milliseconds a decision fetched ahead stays usable (default 1000): the outcomes reported meanwhile are not
   * in it. A goal called less often than this fetches nothing ahead. */
  decideAheadMaxAgeMs: number;
  /** Milliseconds an outcome waits for others to leave with it in one request (default 250); a full batch leaves
   * at once, and `flush()`, `close()` and the end of a Node process send at once. */
  batchDelayMs: number;
}

export const DEFAULT_RESILIENCE: Resilience = Object.freeze({
  decideTimeoutMs: 50,
  breakerAfter: 3,
  cooldownMs: 5000,
  callTimeoutMs: 5000,
  decideAhead: true,
  decideAheadMaxAgeMs: 1000,
  batchDelayMs: 250,
});
