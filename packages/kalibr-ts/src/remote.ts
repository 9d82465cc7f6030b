/**
 * The client of the intelligence service (`kalibr serve`) over its wire contract, built never to slow the
 * caller down or fail because of the service:
 *
 * - a decide waits at most `decideTimeoutMs` (50 ms), then the first path is used;
 * - a circuit breaker stops asking a failing service (a timeout opens it at once) and probes after a cool-down;
 * - with `decideAhead`, decisions of a goal are fetched ahead in batches (`count` on decide: independent draws,
 *   each with its own trace id) and kept for at most `decideAheadMaxAgeMs`, so a call rarely waits for the
 *   service and a busy process sends one decide per many calls;
 * - reported outcomes go to an outbox and are delivered in the background in batches, kept through outages;
 *   the ones the service refuses for good are kept as dead letters with its reason;
 * - the paths an operator disabled on the service (`GET /api/v1/routing/paths`) are read in the background, at most
 *   once per goal per `refreshIntervalMs`, only while the breaker is closed; a fallback (the decide's, or the
 *   next path after a provider failure) skips the last known set and never waits for a read.
 *
 * Paths are registered with `POST /api/v1/routing/paths` (once per process), decisions come from
 * `/routing/decide` with `candidate_model_ids`, outcomes go in batches to `/intelligence/report-outcomes`, each
 * carrying its path (`model_id`, `execution_params`, `tool_id`), so a service that never saw the path counts it.
 */

import { CircuitBreaker, DEFAULT_RESILIENCE, type Resilience } from "./breaker.js";
import { env } from "./env.js";
import { IntelligenceUnavailable, UserError } from "./errors.js";
import { MAX_DECIDE_COUNT, MAX_REASON_CHARS } from "./contract.generated.js";
import {
  type Answer,
  type DeadOutcome,
  Outbox,
  type OutcomePayload,
  Refused,
  type SpoolStorage,
  permanentRefusal,
} from "./outbox.js";
import { canonicalJson, newTraceId, pathKey, toolId } from "./paths.js";
import type { Decision, FailureCategory, OutcomeSource, Path, Usage } from "./types.js";

export interface IntelligenceOptions {
  /** The service's base URL; default `KALIBR_INTELLIGENCE_URL`. */
  url?: string;
  /** Default `KALIBR_API_KEY`. */
  apiKey?: string;
  /** Default `KALIBR_TENANT_ID` (the key alone decides the tenant on `kalibr serve`). */
  tenantId?: string;
  resilience?: Partial<Resilience>;
  /** Durable outbox storage (`new FileSpool(path)` from `@kalibr/sdk/node`); default: memory, or the file
   * named by `KALIBR_SPOOL` on Node. */
  spool?: SpoolStorage;
  /** A `fetch` of your own (proxies, tests); default the global one. */
  fetch?: typeof fetch;
  /** Milliseconds a goal's disabled paths, as last read, are trusted before they are read again (default 1000). */
  refreshIntervalMs?: number;
}

/** One outcome, as the router reports it. */
export interface Outcome {
  traceId: string;
  goal: string;
  path: Path;
  score: number;
  success: boolean;
  source: OutcomeSource;
  failureCategory?: FailureCategory | undefined;
  reason?: string | undefined;
  costUsd?: number | null | undefined;
  latencyMs?: number | undefined;
  usage?: Usage | undefined;
}

export interface OutcomeChanges {
  success?: boolean;
  score?: number;
  failureCategory?: FailureCategory;
  reason?: string;
}

export interface PolicyAnswer {
  goal: string;
  recommended_model: string | null;
  recommended_provider: string | null;
  outcome_success_rate: number | null;
  outcome_sample_count: number;
  confidence: number;
  risk_score: number;
  reasoning: string;
  alternatives: Array<Record<string, unknown>>;
}

export interface PolicyConstraints {
  max_cost_usd?: number;
  max_latency_ms?: number;
  min_quality?: number;
  min_confidence?: number;
  max_risk?: number;
}

const DECIDE = "/api/v1/routing/decide";
const PATHS = "/api/v1/routing/paths";
const NOTHING_DISABLED: ReadonlySet<string> = new Set();
const REPORT_BATCH = "/api/v1/intelligence/report-outcomes";
/** How far the estimated call rate may move with each call (an exponential moving average of the gaps). */
const RATE_SMOOTHING = 0.2;
const MAX_AHEAD_QUEUES = 1000;
const MAX_GOALS_READ = 1000;
/** The largest batch fetched ahead (the wire takes up to `MAX_DECIDE_COUNT`): more would delay learning. */
const AHEAD_BATCH = Math.min(32, MAX_DECIDE_COUNT);

/** The service did not answer usefully (transport error, timeout, 5xx): counts against the breaker. */
class Unavailable extends Error {}

/** The service answered 4xx: the request is at fault (or the key), not the service. */
class Rejected extends UserError {
  constructor(
    readonly statusCode: number,
    readonly reason: string,
  ) {
    super(`intelligence service refused the request: HTTP ${statusCode}: ${reason}`);
  }
}

/**
 * The decisions of one goal (same paths, same risk) fetched ahead, oldest first, and how often calls take them.
 *
 * A batch is sized to last half the age bound at the observed call rate (at most `AHEAD_BATCH`), so a busy
 * goal sends one decide per many calls while a decision waits at most `maxAgeMs` for its call; a goal called less
 * often than once per `maxAgeMs` fetches nothing ahead (the decision would be too old when the call comes).
 */
class AheadQueue {
  private readonly ready: Array<{ decision: Decision; at: number }> = [];
  private lastCallAt: number | undefined;
  private gapMs: number | undefined;
  /** The batch on its way, if any. */
  arriving: Promise<void> | undefined;

  constructor(private readonly maxAgeMs: number) {}

  /** A call at `now`: the rate estimate moves, and the oldest fresh decision is taken, if any. */
  take(now: number): Decision | undefined {
    if (this.lastCallAt !== undefined) {
      const gap = now - this.lastCallAt;
      // A gap on the other side of the age bound (a pause, or the first call after one) starts a new estimate.
      const busy = gap < this.maxAgeMs;
      const wasBusy = this.gapMs !== undefined && this.gapMs < this.maxAgeMs;
      this.gapMs =
        this.gapMs !== undefined && busy === wasBusy ? this.gapMs + (gap - this.gapMs) * RATE_SMOOTHING : gap;
    }
    this.lastCallAt = now;
    return this.next(now);
  }

  /** The oldest decision still fresh at `now`, if any (older ones are dropped, never used). */
  next(now: number): Decision | undefined {
    for (let head = this.ready.shift(); head !== undefined; head = this.ready.shift()) {
      if (now - head.at < this.maxAgeMs) return head.decision;
    }
    return undefined;
  }

  keep(decisions: Decision[], at: number): void {
    for (const decision of decisions) this.ready.push({ decision, at });
  }

  /** How many decisions to fetch now: none while a quarter of a batch is still waiting. */
  wanted(): number {
    if (this.arriving) return 0;
    const batch =
      this.gapMs === undefined
        ? 1 // no rate yet: one ahead, as for a single call
        : this.gapMs >= this.maxAgeMs
          ? 0
          : Math.min(AHEAD_BATCH, Math.max(1, Math.floor(this.maxAgeMs / (2 * this.gapMs))));
    return this.ready.length > batch / 4 ? 0 : batch - this.ready.length;
  }
}

/** A goal's paths disabled on the service, as last read. */
interface DisabledPaths {
  /** The `Path.key` (model and params) of each path the service lists as disabled. */
  keys: ReadonlySet<string>;
  /** When the last read ended, answered or not (`performance.now()`); undefined before the first. */
  readAt: number | undefined;
  /** The read on its way, if any. */
  reading: Promise<ReadonlySet<string>> | undefined;
}

export class RemoteIntelligence {
  readonly url: string;
  readonly tenantId: string | undefined;
  readonly resilience: Resilience;
  readonly breaker: CircuitBreaker;
  private readonly headers: Record<string, string>;
  private readonly fetcher: typeof fetch;
  private readonly registered = new Set<string>();
  private readonly ahead = new Map<string, AheadQueue>();
  private readonly disabled = new Map<string, DisabledPaths>();
  private readonly refreshIntervalMs: number;
  private readonly spool: SpoolStorage | Promise<SpoolStorage | undefined> | undefined;
  private outboxOnce: Promise<Outbox> | undefined;

  constructor(options: IntelligenceOptions = {}) {
    const url = options.url ?? env("KALIBR_INTELLIGENCE_URL");
    if (!url || !/^https?:\/\//.test(url)) {
      throw new UserError(
        `invalid intelligence URL ${JSON.stringify(url)}: set KALIBR_INTELLIGENCE_URL or pass ` +
          "intelligence: { url: 'http://127.0.0.1:8400' } (the base URL of `kalibr serve`)",
      );
    }
    this.url = url.replace(/\/+$/, "");
    this.tenantId = options.tenantId ?? env("KALIBR_TENANT_ID");
    this.headers = { "X-API-Key": options.apiKey ?? env("KALIBR_API_KEY") ?? "", "Content-Type": "application/json" };
    if (this.tenantId) this.headers["X-Tenant-ID"] = this.tenantId;
    this.resilience = checkResilience({ ...DEFAULT_RESILIENCE, ...timeoutFromEnv(), ...options.resilience });
    this.breaker = new CircuitBreaker(this.resilience.breakerAfter, this.resilience.cooldownMs);
    this.fetcher = options.fetch ?? ((input, init) => fetch(input, init));
    this.spool = options.spool ?? spoolFromEnv();
    const refresh = options.refreshIntervalMs ?? 1000;
    if (typeof refresh !== "number" || !(refresh >= 0)) {
      throw new UserError(`refreshIntervalMs is ${JSON.stringify(refresh)}: give milliseconds, a number >= 0`);
    }
    this.refreshIntervalMs = refresh;
  }

  /** Where outcomes go: service URL and tenant (a spool may hold outcomes for several). */
  get endpoint(): string {
    return `${this.url}|${this.tenantId ?? ""}`;
  }

  // --- deciding ------------------------------------------------------------------------------------------
  async decide(goal: string, paths: readonly Path[], highRisk: boolean): Promise<Decision> {
    const queue = this.aheadQueue(goal, paths, highRisk);
    let ready = queue?.take(performance.now());
    if (ready === undefined && queue?.arriving) {
      // A batch already on its way comes sooner than a new request would (its timeout bounds the wait).
      await queue.arriving;
      ready = queue.next(performance.now());
    }
    if (ready !== undefined) {
      this.fetchAhead(queue!, goal, paths, highRisk);
      this.readDisabledSoon(goal, paths);
      return ready;
    }
    if (!this.breaker.allow()) return this.fallback(goal, paths, "circuit breaker open");
    let decision: Decision;
    try {
      decision = (await this.fetchDecisions(goal, paths, highRisk, 1))[0]!;
    } catch (error) {
      return this.fallback(
        goal,
        paths,
        error instanceof Unavailable || error instanceof UserError ? error.message : String(error),
      );
    }
    if (queue) this.fetchAhead(queue, goal, paths, highRisk);
    this.readDisabledSoon(goal, paths);
    void this.outbox().then((outbox) => outbox.resume()); // the service answers: deliver what waited
    return decision;
  }

  private aheadQueue(goal: string, paths: readonly Path[], highRisk: boolean): AheadQueue | undefined {
    if (!this.resilience.decideAhead) return undefined;
    const key = aheadKey(goal, paths, highRisk);
    let queue = this.ahead.get(key);
    if (queue === undefined) {
      this.ahead.set(key, (queue = new AheadQueue(this.resilience.decideAheadMaxAgeMs)));
      if (this.ahead.size > MAX_AHEAD_QUEUES) this.ahead.delete(this.ahead.keys().next().value as string);
    }
    return queue;
  }

  private fetchAhead(queue: AheadQueue, goal: string, paths: readonly Path[], highRisk: boolean): void {
    const count = queue.wanted();
    if (count === 0 || this.breaker.state !== "closed") return;
    // Started from a timer, so the caller's own request goes out first and pays nothing for this one.
    queue.arriving = new Promise<void>((arrived) =>
      setTimeout(() => {
        this.fetchDecisions(goal, paths, highRisk, count)
          .then((decisions) => queue.keep(decisions, performance.now()))
          .catch(() => undefined) // the next call asks again, with its own timeout
          .finally(() => {
            queue.arriving = undefined;
            arrived();
          });
      }, 0),
    );
  }

  /** `count` independent draws of the service, each with its own trace id. */
  private async fetchDecisions(
    goal: string,
    paths: readonly Path[],
    highRisk: boolean,
    count: number,
  ): Promise<Decision[]> {
    const signal = AbortSignal.timeout(this.resilience.decideTimeoutMs);
    await this.register(goal, paths, signal);
    const request: Record<string, unknown> = {
      goal,
      task_risk_level: highRisk ? "high" : "low",
      candidate_model_ids: [...new Set(paths.map((path) => path.model))].sort(),
    };
    if (count > 1) request["count"] = count;
    const body = await this.send("POST", DECIDE, request, signal);
    const more = Array.isArray(body["more"]) ? (body["more"] as Array<Record<string, unknown>>) : [];
    return [body, ...more.slice(0, count - 1)].map((draw) => decisionFrom(goal, paths, draw));
  }

  /** The first path not known to be disabled on the service (the first path when all are). */
  private fallback(goal: string, paths: readonly Path[], why: string): Decision {
    const disabled = this.disabled.get(goal)?.keys ?? NOTHING_DISABLED;
    const path = paths.find((candidate) => !disabled.has(candidate.key)) ?? paths[0]!;
    const which = path === paths[0] ? "the first path" : `the first path not disabled, ${JSON.stringify(path.model)}`;
    return {
      traceId: newTraceId(),
      goal,
      model: path.model,
      path,
      reason: `intelligence unavailable (${why}): using ${which}`,
      exploration: false,
      confidence: 0,
      fallback: true,
      forced: false,
    };
  }

  // --- disabled paths ------------------------------------------------------------------------------------
  /**
   * The keys (`Path.key`) of the goal's paths disabled on the service (`kalibr dashboard`, the disable endpoint), as
   * last read: no wait, no request. A set older than `refreshIntervalMs` is read again in the background, if the
   * breaker is closed; until it lands (or when the read fails), the last known set. The router's fallbacks skip
   * these paths.
   */
  knownDisabledPaths(goal: string): ReadonlySet<string> {
    const known = this.disabledOf(goal);
    this.refreshDisabled(goal, known);
    return known.keys;
  }

  /** Read the goal's disabled paths now unless the last read is fresh (joining a read on its way): the keys, or
   * the last known set while the breaker is not closed or the service fails. Waits at most the decide timeout. */
  disabledPaths(goal: string): Promise<ReadonlySet<string>> {
    const known = this.disabledOf(goal);
    return this.refreshDisabled(goal, known) ?? Promise.resolve(known.keys);
  }

  /** After an answered decide: a read when the goal's set is stale, from a timer so the caller's call goes first
   * (a single path has no fallback to skip). */
  private readDisabledSoon(goal: string, paths: readonly Path[]): void {
    if (paths.length > 1 && this.stale(this.disabled.get(goal))) {
      setTimeout(() => this.refreshDisabled(goal, this.disabledOf(goal)), 0);
    }
  }

  /** Is a read of this set due: none on its way, and none ended within `refreshIntervalMs`? */
  private stale(known: DisabledPaths | undefined): boolean {
    if (known === undefined) return true;
    if (known.reading) return false;
    return known.readAt === undefined || performance.now() - known.readAt >= this.refreshIntervalMs;
  }

  private disabledOf(goal: string): DisabledPaths {
    let known = this.disabled.get(goal);
    if (known === undefined) {
      this.disabled.set(goal, (known = { keys: NOTHING_DISABLED, readAt: undefined, reading: undefined }));
      if (this.disabled.size > MAX_GOALS_READ) this.disabled.delete(this.disabled.keys().next().value as string);
    }
    return known;
  }

  /** The read on its way, or a new one when the set is stale and the breaker closed (never a probe's place). */
  private refreshDisabled(goal: string, known: DisabledPaths): Promise<ReadonlySet<string>> | undefined {
    if (!this.stale(known) || this.breaker.state !== "closed") return known.reading;
    known.reading = this.readDisabled(goal, known.keys).then((keys) => {
      known.keys = keys;
      known.readAt = performance.now(); // a failure too: one request per interval at most
      known.reading = undefined;
      return keys;
    });
    return known.reading;
  }

  private async readDisabled(goal: string, lastKnown: ReadonlySet<string>): Promise<ReadonlySet<string>> {
    const query = new URLSearchParams({ goal, include_disabled: "true" });
    try {
      const signal = AbortSignal.timeout(this.resilience.decideTimeoutMs);
      const listed = (await this.send("GET", `${PATHS}?${query}`, undefined, signal))["paths"];
      if (!Array.isArray(listed)) return lastKnown;
      const off = (listed as Array<{ model_id?: unknown; params?: unknown; enabled?: unknown }>).filter(
        (path) => path.enabled === false && typeof path.model_id === "string",
      );
      return new Set(
        off.map((path) => pathKey(path.model_id as string, (path.params ?? {}) as Record<string, unknown>)),
      );
    } catch {
      return lastKnown; // unavailable, or refused (a goal the service never saw is a 404): the last known
    }
  }

  /** Register each path once per process (documented `POST /api/v1/routing/paths`; the service keeps one). */
  private async register(goal: string, paths: readonly Path[], signal: AbortSignal): Promise<void> {
    await Promise.all(paths.map((path) => this.registerPath(goal, path.model, path.params, toolId(path), signal)));
  }

  private async registerPath(
    goal: string,
    model: string,
    params: Readonly<Record<string, unknown>>,
    tool: string | null,
    signal: AbortSignal,
  ): Promise<void> {
    const key = `${goal}\n${pathKey(model, params)}`;
    if (this.registered.has(key)) return;
    await this.send(
      "POST",
      "/api/v1/routing/paths",
      { goal, model_id: model, params, tool_id: tool, risk_level: "low" },
      signal,
    );
    this.registered.add(key);
  }

  // --- learning ------------------------------------------------------------------------------------------
  /** Keep the outcome (durably with a spool) and return; it is delivered in the background. */
  async report(outcome: Outcome): Promise<void> {
    await (await this.outbox()).add(outcomeBody(outcome));
  }

  /** Deliver every kept outcome now, if the service answers (else they stay kept). */
  async flush(): Promise<void> {
    await (await this.outbox()).flush();
  }

  /** How many outcomes wait for the service. */
  async pendingOutcomes(): Promise<number> {
    return (await this.outbox()).count();
  }

  /** The outcomes the service refused for good, each with its status and reason (kept, never dropped). */
  async deadOutcomes(): Promise<DeadOutcome[]> {
    return (await this.outbox()).deadLetters();
  }

  async updateOutcome(traceId: string, goal: string, changes: OutcomeChanges): Promise<string[]> {
    await this.flush(); // the outcome may still wait in the outbox
    const body = {
      trace_id: traceId,
      goal,
      success: changes.success ?? null,
      score: changes.score ?? null,
      failure_reason: boundedReason(changes.reason),
      failure_category: changes.failureCategory ?? null,
    };
    const answer = await this.call("POST", "/api/v1/intelligence/update-outcome", body);
    return (answer["fields_updated"] as string[] | undefined) ?? [];
  }

  // --- reading -------------------------------------------------------------------------------------------
  async getPolicy(
    goal: string,
    options: { windowHours?: number; constraints?: PolicyConstraints } = {},
  ): Promise<PolicyAnswer> {
    const body = { goal, window_hours: options.windowHours ?? 168, constraints: options.constraints ?? null };
    return (await this.call("POST", "/api/v1/intelligence/policy", body)) as unknown as PolicyAnswer;
  }

  async getInsights(goal?: string, options: { windowHours?: number } = {}): Promise<Record<string, unknown>> {
    const query = new URLSearchParams({ window_hours: String(options.windowHours ?? 168) });
    if (goal !== undefined) query.set("goal", goal);
    return this.call("GET", `/api/v1/intelligence/insights?${query}`);
  }

  /** Deliver what waits if the service may be asked (not while the breaker is open), then stop the timers;
   * outcomes still kept stay in the spool, if any, for the next process. */
  async close(): Promise<void> {
    if (this.outboxOnce) await (await this.outboxOnce).close();
  }

  /** A call whose answer the caller needs: raises `IntelligenceUnavailable` or `UserError`, never falls back. */
  private async call(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
    try {
      return await this.send(method, path, body, AbortSignal.timeout(this.resilience.callTimeoutMs));
    } catch (error) {
      if (error instanceof Unavailable) {
        throw new IntelligenceUnavailable(`intelligence service at ${this.url} unavailable: ${error.message}`);
      }
      throw error;
    }
  }

  // --- delivery ------------------------------------------------------------------------------------------
  private outbox(): Promise<Outbox> {
    this.outboxOnce ??= Promise.resolve(this.spool).then(
      (spool) =>
        new Outbox(
          this.endpoint,
          (payloads) => this.deliver(payloads),
          this.breaker,
          spool,
          this.resilience.batchDelayMs,
        ),
    );
    return this.outboxOnce;
  }

  /** One batch through the batch route: per payload, accepted, refused for good (with why), or to retry. */
  private async deliver(payloads: OutcomePayload[]): Promise<Answer[]> {
    let body: Record<string, unknown>;
    try {
      const signal = AbortSignal.timeout(this.resilience.callTimeoutMs);
      body = await this.send("POST", REPORT_BATCH, { outcomes: payloads }, signal);
    } catch (error) {
      if (error instanceof Rejected && permanentRefusal(error.statusCode)) {
        throw new Refused(error.statusCode, error.reason);
      }
      throw error; // unavailable, or refused until the key is fixed: they wait
    }
    const results = body["results"];
    if (!Array.isArray(results) || results.length !== payloads.length) {
      throw new Unavailable(`unusable batch answer for ${payloads.length} outcomes`);
    }
    return results.map((result: { status?: unknown; status_code?: unknown; message?: unknown }) => {
      if (result.status === "accepted") return "accepted";
      const statusCode = Number(result.status_code);
      return permanentRefusal(statusCode) ? new Refused(statusCode, String(result.message ?? "rejected")) : "retry";
    });
  }

  // --- HTTP ----------------------------------------------------------------------------------------------
  private async send(
    method: string,
    path: string,
    body: unknown,
    signal: AbortSignal,
  ): Promise<Record<string, unknown>> {
    let response: Response;
    let text: string;
    try {
      const init: RequestInit = { method, headers: this.headers, signal };
      if (body !== undefined) init.body = JSON.stringify(body);
      response = await this.fetcher(`${this.url}${path}`, init);
      text = await response.text();
    } catch (error) {
      const name = (error as { name?: string } | null)?.name;
      const timedOut = name === "TimeoutError" || name === "AbortError";
      this.breaker.recordFailure(timedOut);
      throw new Unavailable(timedOut ? "no answer in time" : `could not be reached (${String(error)})`);
    }
    if (response.status >= 500) {
      this.breaker.recordFailure();
      throw new Unavailable(`HTTP ${response.status} from the intelligence service`);
    }
    this.breaker.recordSuccess();
    if (response.status >= 400) throw new Rejected(response.status, detail(text));
    try {
      return JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new Unavailable("the intelligence service sent a body that is not JSON");
    }
  }
}

function checkResilience(resilience: Resilience): Resilience {
  for (const name of [
    "decideTimeoutMs",
    "cooldownMs",
    "callTimeoutMs",
    "batchDelayMs",
    "decideAheadMaxAgeMs",
  ] as const) {
    const value = resilience[name];
    if (typeof value !== "number" || !(value > 0)) {
      throw new UserError(`resilience.${name} is ${JSON.stringify(value)}: give a positive number of milliseconds`);
    }
  }
  if (!Number.isInteger(resilience.breakerAfter) || resilience.breakerAfter < 1) {
    throw new UserError(
      `resilience.breakerAfter is ${JSON.stringify(resilience.breakerAfter)}: give a whole number >= 1`,
    );
  }
  return Object.freeze(resilience);
}

/** `KALIBR_INTELLIGENCE_TIMEOUT` (seconds, as for the Python client) as the decide timeout, when set. */
function timeoutFromEnv(): Partial<Resilience> {
  const seconds = env("KALIBR_INTELLIGENCE_TIMEOUT");
  if (seconds === undefined) return {};
  const value = Number(seconds);
  if (!(value > 0)) {
    throw new UserError(
      `KALIBR_INTELLIGENCE_TIMEOUT=${JSON.stringify(seconds)}: give the decide timeout in seconds, e.g. 0.05`,
    );
  }
  return { decideTimeoutMs: value * 1000 };
}

/** On Node with `KALIBR_SPOOL` set, the file spool; loaded only then, so other runtimes never see `node:fs`. */
function spoolFromEnv(): Promise<SpoolStorage | undefined> | undefined {
  const file = env("KALIBR_SPOOL");
  if (!file) return undefined;
  return import("./node.js").then(
    (node) => new node.FileSpool(file),
    () => undefined, // not Node: memory only
  );
}

function aheadKey(goal: string, paths: readonly Path[], highRisk: boolean): string {
  return `${goal}\n${highRisk}\n${paths.map((path) => path.key).join("\n")}`;
}

function decisionFrom(goal: string, paths: readonly Path[], body: Record<string, unknown>): Decision {
  const model = body["model_id"];
  const traceId = body["trace_id"];
  if (typeof model !== "string" || typeof traceId !== "string") {
    throw new Unavailable(`unusable decide answer: ${JSON.stringify(body).slice(0, 200)}`);
  }
  const params = (body["params"] as Record<string, unknown> | null | undefined) ?? {};
  const sameModel = paths.filter((path) => path.model === model);
  const path = sameModel.find((candidate) => candidate.key === pathKey(model, params)) ?? sameModel[0];
  if (path === undefined)
    throw new Unavailable(`the service chose model ${JSON.stringify(model)}, none of this router's paths`);
  return {
    traceId,
    goal,
    model,
    path,
    reason: String(body["reason"] ?? ""),
    exploration: Boolean(body["exploration"]),
    confidence: Number(body["confidence"] ?? 0),
    fallback: false,
    forced: false,
  };
}

/** The wire contract's report-outcome body; `model_id` lets the service count a trace id it never issued. */
function outcomeBody(outcome: Outcome): OutcomePayload {
  const metadata: Record<string, unknown> = { source: outcome.source };
  if (outcome.costUsd !== null && outcome.costUsd !== undefined) metadata["cost_usd"] = outcome.costUsd;
  if (outcome.latencyMs !== undefined) metadata["latency_ms"] = outcome.latencyMs;
  if (outcome.usage) {
    metadata["input_tokens"] = outcome.usage.prompt_tokens;
    metadata["output_tokens"] = outcome.usage.completion_tokens;
  }
  return {
    trace_id: outcome.traceId,
    goal: outcome.goal,
    success: outcome.success,
    score: outcome.score,
    failure_reason: boundedReason(outcome.reason),
    failure_category: outcome.failureCategory ?? null,
    metadata,
    model_id: outcome.path.model,
    execution_params: JSON.parse(canonicalJson(outcome.path.params)) as Record<string, unknown>,
    tool_id: toolId(outcome.path),
  };
}

/** A reason within the service's bound (`MAX_REASON_CHARS` of `_schemas.py`): cut here, not refused there. */
function boundedReason(reason: string | undefined): string | null {
  if (reason === undefined) return null;
  if (reason.length <= MAX_REASON_CHARS) return reason;
  const cut = /[\uD800-\uDBFF]/.test(reason[MAX_REASON_CHARS - 2]!) ? MAX_REASON_CHARS - 2 : MAX_REASON_CHARS - 1;
  return `${reason.slice(0, cut)}…`; // never half of a surrogate pair
}

/** What a refusal says: `detail` (for a 422, each bad field and its problem), else the start of the body. */
function detail(text: string): string {
  try {
    const parsed = JSON.parse(text) as { detail?: unknown; errors?: Array<{ field?: unknown; message?: unknown }> };
    if (typeof parsed.detail === "string" && parsed.detail) return parsed.detail;
    if (Array.isArray(parsed.errors) && parsed.errors.length) {
      return parsed.errors.map((error) => `${String(error.field)}: ${String(error.message)}`).join("; ");
    }
    if (parsed.detail !== undefined) return JSON.stringify(parsed.detail);
  } catch {
    // not JSON: quote the start of the body
  }
  return text.slice(0, 200);
}
