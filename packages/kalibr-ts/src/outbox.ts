/**
 * Outcomes on their way to the service: kept until the service has answered for each, delivered in the
 * background, redelivered after an outage.
 *
 * Keyed by trace id: a newer report of the same call replaces one not yet sent, and one sent meanwhile is not
 * mistaken for the newer. The service counts a trace id once (a later report corrects it), so redelivery after
 * a lost answer never counts an outcome twice. With a `SpoolStorage` (`FileSpool` from `@kalibr/sdk/node`)
 * outcomes also survive a process restart.
 */

import type { CircuitBreaker } from "./breaker.js";

export type OutcomePayload = Record<string, unknown> & { trace_id: string };

/** Durable storage for the outbox; every method may be sync or async. */
export interface SpoolStorage {
  /** Everything stored for `endpoint` (service URL and tenant) and not yet removed. */
  load(endpoint: string): OutcomePayload[] | Promise<OutcomePayload[]>;
  add(endpoint: string, payload: OutcomePayload): void | Promise<void>;
  remove(endpoint: string, traceIds: string[]): void | Promise<void>;
}

/** What sending one outcome came to: settled (accepted, or refused for good) or to be tried again. */
export type DeliveryResult = "settled" | "retry";

interface Entry {
  payload: OutcomePayload;
  version: number;
}

const WAVE = 16;

export class Outbox {
  private readonly pending = new Map<string, Entry>();
  private version = 0;
  private draining: Promise<void> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private loaded: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly endpoint: string,
    private readonly send: (payload: OutcomePayload) => Promise<DeliveryResult>,
    private readonly breaker: CircuitBreaker,
    private readonly storage?: SpoolStorage,
  ) {}

  /** How many outcomes wait for the service (the spool's included). */
  async count(): Promise<number> {
    await this.load();
    return this.pending.size;
  }

  /** Keep `payload` (durably, with storage) and start delivering it. */
  async add(payload: OutcomePayload): Promise<void> {
    await this.load();
    this.pending.set(payload.trace_id, { payload, version: ++this.version });
    if (this.storage) {
      try {
        await this.storage.add(this.endpoint, payload);
      } catch (error) {
        console.warn(`kalibr: could not write the spool (${String(error)}); the outcome is kept in memory`);
      }
    }
    this.wake();
  }

  /** Deliver in the background now, unless the breaker holds calls back (then after its cool-down). */
  wake(): void {
    if (!this.closed && !this.draining) void this.drain(false);
  }

  /** Try to deliver everything now, breaker or not; resolves when every outcome got an answer or failed. */
  async flush(): Promise<void> {
    await this.load();
    await this.draining;
    await this.drain(true);
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  private load(): Promise<void> {
    this.loaded ??= (async () => {
      if (!this.storage) return;
      try {
        for (const payload of await this.storage.load(this.endpoint)) {
          if (!this.pending.has(payload.trace_id))
            this.pending.set(payload.trace_id, { payload, version: ++this.version });
        }
      } catch (error) {
        console.warn(`kalibr: could not read the spool (${String(error)}); starting with none of its outcomes`);
      }
    })();
    return this.loaded;
  }

  private drain(force: boolean): Promise<void> {
    const run = (async () => {
      await this.load();
      while (this.pending.size > 0) {
        const wave: Array<[string, Entry]> = [];
        for (const item of this.pending) {
          if (wave.length === WAVE || !(force || this.breaker.allow())) break;
          wave.push(item);
        }
        if (wave.length === 0) break;
        const results = await Promise.all(wave.map(([, entry]) => this.send(entry.payload)));
        const settled = wave.filter(([traceId, entry], index) => {
          if (results[index] !== "settled" || this.pending.get(traceId)?.version !== entry.version) return false;
          this.pending.delete(traceId);
          return true;
        });
        if (this.storage && settled.length) await this.forget(settled.map(([traceId]) => traceId));
        if (results.includes("retry")) break;
      }
      if (this.pending.size > 0) this.scheduleRetry();
    })();
    const tracked: Promise<void> = run.finally(() => {
      if (this.draining === tracked) this.draining = undefined;
    });
    this.draining = tracked;
    return tracked;
  }

  private async forget(traceIds: string[]): Promise<void> {
    try {
      await this.storage?.remove(this.endpoint, traceIds);
    } catch (error) {
      console.warn(`kalibr: could not update the spool (${String(error)}); delivered outcomes may be sent again`);
    }
  }

  private scheduleRetry(): void {
    if (this.closed || this.retryTimer !== undefined) return;
    const delay = Math.max(this.breaker.msUntilProbe(), 200);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.wake();
    }, delay);
    // On Node, a waiting retry must not keep the process alive (a file spool keeps the outcomes).
    (this.retryTimer as { unref?: () => void }).unref?.();
  }
}
