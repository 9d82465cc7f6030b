/**
 * Outcomes on their way to the service: kept until the service has answered for each, delivered in the
 * background in batches, redelivered after an outage.
 *
 * Keyed by trace id: a newer report of the same call replaces one not yet sent, and one sent meanwhile is not
 * mistaken for the newer. The service counts a trace id once (a later report corrects it), so redelivery after
 * a lost answer never counts an outcome twice. With a `SpoolStorage` (`FileSpool` from `@kalibr/sdk/node`)
 * outcomes also survive a process restart.
 *
 * Outcomes reported within `batchDelayMs` leave together (32 waiting leave at once; a request takes at most
 * `MAX_BATCH`), so a busy process sends one request per many calls rather than one per call. The window's
 * timer never keeps a Node, Bun or Deno process alive: when it would end, what waits is sent first
 * (`beforeExit`).
 *
 * The rule for refusals is the Python spool's:
 * a batch the service refuses as a whole (413, 422) is split in halves until the refused outcome is alone;
 * an outcome refused for good (a 4xx other than 401, 403, 408, 429) is kept as a dead letter with the
 * service's reason, never dropped; anything else (5xx, timeout, unreachable, a key problem) keeps it for later.
 */

import type { CircuitBreaker } from "./breaker.js";

export type OutcomePayload = Record<string, unknown> & { trace_id: string };

/** An outcome the service refused for good, kept with its reason (resending it as it is cannot help). */
export interface DeadOutcome {
  payload: OutcomePayload;
  statusCode: number;
  reason: string;
  /** When it was refused, in ms since the epoch. */
  deadAt: number;
}

/** Durable storage for the outbox; every method may be sync or async. */
export interface SpoolStorage {
  /** Everything stored for `endpoint` (service URL and tenant) and not yet removed or dead. */
  load(endpoint: string): OutcomePayload[] | Promise<OutcomePayload[]>;
  add(endpoint: string, payload: OutcomePayload): void | Promise<void>;
  remove(endpoint: string, traceIds: string[]): void | Promise<void>;
  /** Keep refused outcomes as dead letters (they leave the pending ones). */
  bury(endpoint: string, dead: DeadOutcome[]): void | Promise<void>;
  /** The dead letters stored for `endpoint`. */
  loadDead(endpoint: string): DeadOutcome[] | Promise<DeadOutcome[]>;
}

/** The service refused a whole request for good (`statusCode` is permanent: see `permanentRefusal`). */
export class Refused extends Error {
  constructor(
    readonly statusCode: number,
    readonly reason: string,
  ) {
    super(`HTTP ${statusCode}: ${reason}`);
  }
}

/** The service's answer for one outcome of a batch. */
export type Answer = "accepted" | "retry" | Refused;

/**
 * Sends a batch: per payload in order, its answer. Throws `Refused` when the service refuses the whole request
 * for good, anything else when it is unavailable (every payload then stays for later).
 */
export type BatchSender = (payloads: OutcomePayload[]) => Promise<Answer[]>;

/** A refusal resending cannot fix: 4xx, except a key problem (401/403, fixed by the operator), 408 and 429. */
export function permanentRefusal(statusCode: number): boolean {
  return statusCode >= 400 && statusCode < 500 && ![401, 403, 408, 429].includes(statusCode);
}

interface Entry {
  payload: OutcomePayload;
  version: number;
}

export const MAX_BATCH = 200;
/** This many waiting outcomes leave at once, without waiting out the window, so learning lags by fewer. */
const FULL_BATCH = 32;
const MIN_RETRY_MS = 200;
const MAX_DEAD_IN_MEMORY = 10_000;

/** Outboxes whose batch window is open: sent at once when the Node process would otherwise end. */
const windowsOpen = new Set<Outbox>();
let exitHooked = false;

function sendBeforeExit(outbox: Outbox): void {
  windowsOpen.add(outbox);
  if (exitHooked) return;
  exitHooked = true;
  const runtime = (globalThis as { process?: { on?: (event: string, listener: () => void) => void } }).process;
  runtime?.on?.("beforeExit", () => {
    for (const open of [...windowsOpen]) open.endWindow();
  });
}

export class Outbox {
  private readonly pending = new Map<string, Entry>();
  private readonly dead = new Map<string, DeadOutcome>();
  private version = 0;
  private draining: Promise<void> | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private retrying = false;
  private loaded: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly endpoint: string,
    private readonly send: BatchSender,
    private readonly breaker: CircuitBreaker,
    private readonly storage: SpoolStorage | undefined,
    private readonly batchDelayMs: number,
  ) {}

  /** How many outcomes wait for the service (the spool's included). */
  async count(): Promise<number> {
    await this.load();
    return this.pending.size;
  }

  /** The outcomes the service refused for good, oldest first (the spool's included). */
  async deadLetters(): Promise<DeadOutcome[]> {
    await this.load();
    return [...this.dead.values()];
  }

  /** Keep `payload` (durably, with storage); it leaves with the next batch. */
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
    if (this.draining) return;
    if (this.pending.size >= FULL_BATCH) this.wake();
    else this.schedule(this.batchDelayMs, false);
  }

  /** The service answers again: deliver what waited for it now rather than after the retry delay. */
  resume(): void {
    if (this.retrying) this.wake();
  }

  /** Try to deliver everything now, breaker or not; resolves when every outcome got an answer or failed. */
  async flush(): Promise<void> {
    await this.load();
    await this.draining;
    this.cancelTimer();
    await this.drain(true);
  }

  /** Deliver what waits if the service may be asked (never waiting out the breaker), then stop the timers. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.draining;
    if (this.pending.size > 0 && this.breaker.allow()) {
      this.cancelTimer();
      await this.drain(false);
    }
    this.closed = true;
    this.cancelTimer();
  }

  /** The process is about to end: send the batch whose window is still open now. */
  endWindow(): void {
    if (this.timer !== undefined && !this.retrying) this.wake();
  }

  private wake(): void {
    this.cancelTimer();
    if (!this.closed && !this.draining) void this.drain(false);
  }

  private schedule(delayMs: number, retrying: boolean): void {
    if (this.closed || this.timer !== undefined) return;
    this.retrying = retrying;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      windowsOpen.delete(this);
      this.wake();
    }, delayMs);
    // On Node, Bun and Deno, no timer keeps the process alive: a batch window is cut short before exit, and a
    // waiting retry gives up (a file spool keeps the outcomes).
    (this.timer as { unref?: () => void }).unref?.();
    if (!retrying) sendBeforeExit(this);
  }

  private cancelTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.retrying = false;
    windowsOpen.delete(this);
  }

  private load(): Promise<void> {
    this.loaded ??= (async () => {
      if (!this.storage) return;
      try {
        for (const payload of await this.storage.load(this.endpoint)) {
          if (!this.pending.has(payload.trace_id))
            this.pending.set(payload.trace_id, { payload, version: ++this.version });
        }
        for (const dead of await this.storage.loadDead(this.endpoint)) this.keepDead(dead);
      } catch (error) {
        console.warn(`kalibr: could not read the spool (${String(error)}); starting with none of its outcomes`);
      }
    })();
    return this.loaded;
  }

  private drain(force: boolean): Promise<void> {
    const run = (async () => {
      await this.load();
      while (this.pending.size > 0 && (force || this.breaker.allow())) {
        const batch: Array<[string, Entry]> = [];
        for (const item of this.pending) {
          if (batch.length === MAX_BATCH) break;
          batch.push(item);
        }
        const answers = await this.sendSplitting(batch.map(([, entry]) => entry.payload));
        // A report made while its batch was in flight is newer: it stays pending, whatever the older got.
        const current = (index: number) => this.pending.get(batch[index]![0])?.version === batch[index]![1].version;
        const settled: string[] = [];
        const buried: DeadOutcome[] = [];
        answers.forEach((answer, index) => {
          if (answer === "retry" || !current(index)) return;
          const [traceId, entry] = batch[index]!;
          this.pending.delete(traceId);
          if (answer === "accepted") settled.push(traceId);
          else
            buried.push({
              payload: entry.payload,
              statusCode: answer.statusCode,
              reason: answer.reason,
              deadAt: Date.now(),
            });
        });
        if (settled.length) await this.store((storage) => storage.remove(this.endpoint, settled), "remove");
        if (buried.length) await this.bury(buried);
        if (answers.includes("retry")) break;
        if (!force && this.pending.size < FULL_BATCH) break; // what came meanwhile waits for its own window
      }
      if (this.pending.size > 0) this.schedule(Math.max(this.breaker.msUntilProbe(), MIN_RETRY_MS), true);
    })();
    const tracked: Promise<void> = run.finally(() => {
      if (this.draining !== tracked) return;
      this.draining = undefined;
      if (this.pending.size > 0) this.schedule(this.batchDelayMs, false); // added after the loop's last look
    });
    this.draining = tracked;
    return tracked;
  }

  /** Send `payloads`; a whole-batch refusal is split until the refused outcome is alone. */
  private async sendSplitting(payloads: OutcomePayload[]): Promise<Answer[]> {
    try {
      return await this.send(payloads);
    } catch (error) {
      if (!(error instanceof Refused)) return payloads.map(() => "retry");
      if (payloads.length === 1) return [error];
      const middle = payloads.length >> 1;
      return [
        ...(await this.sendSplitting(payloads.slice(0, middle))),
        ...(await this.sendSplitting(payloads.slice(middle))),
      ];
    }
  }

  private async bury(buried: DeadOutcome[]): Promise<void> {
    for (const dead of buried) {
      console.warn(
        `kalibr: the intelligence service refused outcome ${dead.payload.trace_id} for good ` +
          `(HTTP ${dead.statusCode}: ${dead.reason}); kept as a dead letter (intelligence.deadOutcomes())`,
      );
      this.keepDead(dead);
    }
    await this.store((storage) => storage.bury(this.endpoint, buried), "bury");
  }

  private keepDead(dead: DeadOutcome): void {
    this.dead.delete(dead.payload.trace_id);
    this.dead.set(dead.payload.trace_id, dead);
    if (this.dead.size > MAX_DEAD_IN_MEMORY) this.dead.delete(this.dead.keys().next().value as string);
  }

  private async store(write: (storage: SpoolStorage) => void | Promise<void>, what: string): Promise<void> {
    if (!this.storage) return;
    try {
      await write(this.storage);
    } catch (error) {
      const consequence = what === "remove" ? "delivered outcomes may be sent again" : "dead letters stay in memory";
      console.warn(`kalibr: could not update the spool (${String(error)}); ${consequence}`);
    }
  }
}
