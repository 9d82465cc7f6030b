/**
 * The Router: ask the service for a path, call it (falling back to the other paths on provider failures),
 * and report how it went.
 *
 * A Router holds configuration and a bounded map of recent calls (trace id to decision, cost, latency and
 * usage; never text), so one Router may serve concurrent requests: everything about a call lives in what it
 * returns, and `report()` without a trace id reports the caller's own last call (see `context.ts`).
 */

import { beginCall, lastTraceId, type Slot } from "./context.js";
import { AllPathsFailed, ProviderError, RequestRejected, UserError } from "./errors.js";
import {
  checkChanges,
  checkGoal,
  checkMessages,
  checkScore,
  describe,
  makePath,
  newTraceId,
  parsePaths,
} from "./paths.js";
import { costOf } from "./pricing.js";
import { anthropicMessages } from "./providers/anthropic.js";
import {
  readJson,
  send,
  serverSentEvents,
  transportError,
  type ProviderRequest,
  type WireFormat,
} from "./providers/base.js";
import { openaiChat } from "./providers/openai.js";
import { sharedIntelligence } from "./shared.js";
import { type IntelligenceOptions, type OutcomeChanges, type PolicyAnswer, RemoteIntelligence } from "./remote.js";
import { ChunkAggregator, CompletionStream } from "./stream.js";
import {
  checkFailureCategory,
  type Attempt,
  type ChatCompletion,
  type ChatCompletionChunk,
  type Decision,
  type FailureCategory,
  type Message,
  type OutcomeSource,
  type Path,
  type PathSpec,
  type RoutedCompletion,
  type Usage,
} from "./types.js";

const RECENT_CALLS = 10_000;
const DEFAULT_TIMEOUT_MS = 60_000;

export interface RouterOptions {
  /** The task's name; goals never share outcomes. */
  goal: string;
  /** Model names or `{ model, params, tools }`; the first is the fallback when the service is unavailable. */
  paths: PathSpec[];
  /** Called with the answer's text; its boolean is reported at once (an explicit `report()` wins). */
  successWhen?: (output: string) => boolean;
  /** Like `successWhen`, returning a score in [0, 1]. */
  scoreWhen?: (output: string) => number;
  /** The service: a shared `RemoteIntelligence`, or its options; default from `KALIBR_INTELLIGENCE_URL` etc. */
  intelligence?: RemoteIntelligence | IntelligenceOptions;
  /** Milliseconds for each provider call (default 60000). */
  timeoutMs?: number;
  /** A `fetch` of your own for the provider calls. */
  fetch?: typeof fetch;
  /** Costly mistakes: decisions take the best-looking path and never explore. */
  highRisk?: boolean;
}

export interface CompletionOptions {
  /** Call this model (a path's model, or any other) instead of asking the service. */
  forceModel?: string;
  /** Return a `CompletionStream` instead of the whole answer. */
  stream?: boolean;
  /** Anything else (temperature, max_tokens, tools, tool_choice, response_format, ...) goes to the provider. */
  [param: string]: unknown;
}

export interface ReportOptions {
  /** A score in [0, 1] instead of (or with) the boolean. */
  score?: number;
  failureCategory?: FailureCategory;
  /** Which call; default: the caller's own last call of this Router. */
  traceId?: string;
  costUsd?: number;
  latencyMs?: number;
}

interface CallRecord {
  decision: Decision;
  costUsd?: number | null;
  latencyMs?: number;
  usage?: Usage | undefined;
}

const WIRES: Record<Path["provider"], WireFormat> = { openai: openaiChat, anthropic: anthropicMessages };

export class Router {
  readonly goal: string;
  readonly paths: readonly Path[];
  readonly intelligence: RemoteIntelligence;
  readonly highRisk: boolean;
  private readonly successWhen: ((output: string) => boolean) | undefined;
  private readonly scoreWhen: ((output: string) => number) | undefined;
  private readonly timeoutMs: number;
  private readonly fetcher: typeof fetch;
  private readonly calls = new Map<string, CallRecord>();

  constructor(options: RouterOptions) {
    if (options === null || typeof options !== "object") {
      throw new UserError(
        "new Router({ goal, paths }) takes an options object, e.g. { goal: 'extract', paths: ['gpt-4o'] }",
      );
    }
    this.goal = checkGoal(options.goal);
    this.paths = parsePaths(options.paths);
    if (options.successWhen && options.scoreWhen) throw new UserError("pass successWhen or scoreWhen, not both");
    for (const name of ["successWhen", "scoreWhen"] as const) {
      if (options[name] !== undefined && typeof options[name] !== "function") {
        throw new UserError(`${name} must be a function taking the answer's text, got ${describe(options[name])}`);
      }
    }
    this.successWhen = options.successWhen;
    this.scoreWhen = options.scoreWhen;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.fetcher = options.fetch ?? ((input, init) => fetch(input, init));
    this.highRisk = options.highRisk ?? false;
    this.intelligence =
      options.intelligence instanceof RemoteIntelligence
        ? options.intelligence
        : sharedIntelligence(options.intelligence);
  }

  // --- deciding ------------------------------------------------------------------------------------------
  /** Choose a path for a call you make yourself; report it with `report(success, reason, { traceId })`. */
  decide(options: { forceModel?: string } = {}): Promise<Decision> {
    return this.decideInto(beginCall(this), options.forceModel);
  }

  private async decideInto(slot: Slot, forceModel: string | undefined): Promise<Decision> {
    const decision =
      forceModel === undefined
        ? await this.intelligence.decide(this.goal, this.paths, this.highRisk)
        : this.forced(forceModel, `forced to ${JSON.stringify(forceModel)} by the caller`, 1);
    this.remember({ decision }, slot);
    return decision;
  }

  private forced(model: string, reason: string, confidence: number, path?: Path): Decision {
    if (typeof model !== "string" || !model) {
      throw new UserError(
        `forceModel is ${describe(model)}: give a model name such as ${JSON.stringify(this.paths[0]!.model)}`,
      );
    }
    // A model outside the declared paths is called like the first path (same provider settings).
    const first = this.paths[0]!;
    const chosen =
      path ??
      this.paths.find((candidate) => candidate.model === model) ??
      makePath({ ...first, apiKey: first.apiKey, model, params: {} });
    return {
      traceId: newTraceId(),
      goal: this.goal,
      model,
      path: chosen,
      reason,
      exploration: false,
      confidence,
      fallback: false,
      forced: true,
    };
  }

  /** The chosen path, then every other path in declared order that is not disabled on the service (as last read;
   * unless all are, as a decision would), each a decision of its own. */
  private *fallbacks(first: Decision, slot: Slot): Generator<Decision> {
    yield first;
    let previous = first;
    const known = this.intelligence.knownDisabledPaths(this.goal);
    const disabled = this.paths.every((path) => known.has(path.key)) ? new Set<string>() : known;
    for (const path of this.paths) {
      if (path.key === first.path.key || disabled.has(path.key)) continue;
      previous = this.forced(path.model, `fallback: ${JSON.stringify(previous.model)} failed`, 0, path);
      this.remember({ decision: previous }, slot);
      yield previous;
    }
  }

  // --- calling -------------------------------------------------------------------------------------------
  /** Call the chosen path (falling back on provider failures) and return its OpenAI-shaped answer. */
  completion(messages: Message[] | string, options: CompletionOptions & { stream: true }): Promise<CompletionStream>;
  completion(messages: Message[] | string, options?: CompletionOptions): Promise<RoutedCompletion>;
  completion(
    messages: Message[] | string,
    options: CompletionOptions = {},
  ): Promise<RoutedCompletion | CompletionStream> {
    if (options.stream) {
      try {
        return Promise.resolve(this.stream(messages, options)); // begins the call in the caller's context
      } catch (error) {
        return Promise.reject(error);
      }
    }
    const slot = beginCall(this);
    return this.complete(slot, messages, options);
  }

  /** Stream the answer: `for await (const chunk of router.stream(messages)) ...`. */
  stream(messages: Message[] | string, options: CompletionOptions = {}): CompletionStream {
    const conversation = checkMessages(messages);
    const { forceModel, stream: _stream, ...params } = options;
    const slot = beginCall(this);
    return new CompletionStream((stream) => this.streamCalls(stream, slot, conversation, forceModel, params));
  }

  private async complete(
    slot: Slot,
    messages: Message[] | string,
    options: CompletionOptions,
  ): Promise<RoutedCompletion> {
    const conversation = checkMessages(messages);
    const { forceModel, stream: _stream, ...params } = options;
    const attempts: Attempt[] = [];
    const errors: ProviderError[] = [];
    for (const decision of this.fallbacks(await this.decideInto(slot, forceModel), slot)) {
      const request = this.request(decision, conversation, params, false);
      const wire = WIRES[decision.path.provider];
      const started = performance.now();
      try {
        const text = await send(wire, wire.build(request), decision.model, this.fetcher, this.timeoutMs);
        const answer = wire.parse(readJson(text, decision.model), request);
        return await this.finish(decision, answer, started, attempts);
      } catch (error) {
        errors.push(await this.failedAttempt(error, decision, started, attempts));
      }
    }
    throw new AllPathsFailed(this.goal, errors);
  }

  private async *streamCalls(
    stream: CompletionStream,
    slot: Slot,
    messages: Message[],
    forceModel: string | undefined,
    params: Record<string, unknown>,
  ): AsyncGenerator<ChatCompletionChunk> {
    const attempts: Attempt[] = [];
    const errors: ProviderError[] = [];
    for (const decision of this.fallbacks(await this.decideInto(slot, forceModel), slot)) {
      const request = this.request(decision, messages, params, true);
      const wire = WIRES[decision.path.provider];
      const started = performance.now();
      let chunks: AsyncGenerator<ChatCompletionChunk>;
      let first: IteratorResult<ChatCompletionChunk>;
      try {
        const response = await send(wire, wire.build(request), decision.model, this.fetcher, this.timeoutMs, true);
        chunks = chunksOf(response, wire, request);
        first = await chunks.next(); // a path that fails before its first chunk falls back to the next
      } catch (error) {
        errors.push(await this.failedAttempt(error, decision, started, attempts));
        continue;
      }
      stream.decision = decision;
      const aggregate = new ChunkAggregator();
      try {
        for (let item = first; !item.done; item = await chunks.next()) {
          aggregate.add(item.value);
          yield { ...item.value, model: decision.model };
        }
      } catch (error) {
        const failure = transportError(error, decision.model);
        await this.reportFailure(decision, failure, started);
        throw failure;
      }
      stream.completion = await this.finish(decision, aggregate.result(decision.model), started, attempts);
      return;
    }
    throw new AllPathsFailed(this.goal, errors);
  }

  private request(decision: Decision, messages: Message[], params: Record<string, unknown>, stream: boolean) {
    const merged = { ...decision.path.params, ...params };
    if (decision.path.tools.length && merged["tools"] === undefined) merged["tools"] = [...decision.path.tools];
    return { path: decision.path, messages, params: merged, stream } satisfies ProviderRequest;
  }

  /** A provider failure before the answer: blamed on its path, and the next path is tried. A request the provider
   * refuses as the caller's fault, and anything that is not a provider failure, is the caller's to see. */
  private async failedAttempt(error: unknown, decision: Decision, started: number, attempts: Attempt[]) {
    if (error instanceof RequestRejected || !(error instanceof ProviderError)) throw error;
    attempts.push(await this.reportFailure(decision, error, started));
    return error;
  }

  private async finish(
    decision: Decision,
    answer: ChatCompletion,
    started: number,
    attempts: Attempt[],
  ): Promise<RoutedCompletion> {
    const latencyMs = performance.now() - started;
    const costUsd = costOf(decision.path, answer.usage);
    this.remember({ decision, costUsd, latencyMs, usage: answer.usage });
    const routed: RoutedCompletion = {
      ...answer,
      model: decision.model,
      providerModel: answer.model,
      decision,
      traceId: decision.traceId,
      costUsd,
      latencyMs,
      attempts,
    };
    await this.evaluate(decision.traceId, answer.choices[0]?.message.content ?? "");
    return routed;
  }

  /** Run `successWhen`/`scoreWhen` on an answer; a callback that throws counts as `validation_failed`. */
  private async evaluate(traceId: string, output: string): Promise<void> {
    const source: OutcomeSource = this.successWhen ? "success_when" : "score_when";
    const callback = this.successWhen ?? this.scoreWhen;
    if (!callback) return;
    let score: number;
    try {
      const value: unknown = callback(output);
      score = this.successWhen ? (value ? 1 : 0) : checkScore(value, "scoreWhen returned");
    } catch (error) {
      const reason = `${source === "success_when" ? "successWhen" : "scoreWhen"} threw ${String(error)}`;
      await this.send(traceId, { score: 0, success: false, source, reason, failureCategory: "validation_failed" });
      return;
    }
    await this.send(traceId, { score, success: score >= 0.5, source });
  }

  private async reportFailure(decision: Decision, error: ProviderError, started: number): Promise<Attempt> {
    this.remember({ decision, latencyMs: performance.now() - started });
    const failureCategory = error.failureCategory;
    await this.send(decision.traceId, {
      score: 0,
      success: false,
      source: "error",
      reason: error.message.slice(0, 300),
      failureCategory,
    });
    return { decision, error: error.message, failureCategory };
  }

  // --- reporting -----------------------------------------------------------------------------------------
  /**
   * Report how a call went: `report(true)`, `report(false, 'invalid_schema', { failureCategory: 'validation_failed' })`,
   * `report(undefined, undefined, { score: 0.8 })`. Without `traceId` it reports the caller's last call of this
   * Router. An explicit report replaces what `successWhen`/`scoreWhen` said for the same call. Resolves once the
   * outcome is kept for delivery; never fails because the service is down.
   */
  async report(success?: boolean, reason?: string, options: ReportOptions = {}): Promise<void> {
    if (success !== undefined && typeof success !== "boolean") {
      throw new UserError(`report(success) takes a boolean, got ${describe(success)}: e.g. router.report(true)`);
    }
    if (reason !== undefined && reason !== null && typeof reason !== "string") {
      throw new UserError(`report(success, reason) takes the reason as a string, got ${describe(reason)}`);
    }
    const failureCategory = checkFailureCategory(options.failureCategory);
    if (success === undefined && options.score === undefined) {
      throw new UserError(
        "report() needs success or a score: router.report(true) or router.report(undefined, undefined, { score: 0.7 })",
      );
    }
    const score = options.score === undefined ? (success ? 1 : 0) : checkScore(options.score, "score is");
    const traceId = options.traceId ?? lastTraceId(this);
    if (traceId === undefined) {
      throw new UserError(
        "no call to report in this context: call completion() or decide() first, or pass { traceId } " +
          "(every response and decision has one)",
      );
    }
    const fields = {
      score,
      success: success ?? score >= 0.5,
      source: "explicit" as const,
      reason: reason ?? undefined,
    };
    await this.send(traceId, { ...fields, failureCategory, costUsd: options.costUsd, latencyMs: options.latencyMs });
  }

  private async send(
    traceId: string,
    outcome: { score: number; success: boolean; source: OutcomeSource; reason?: string | undefined } & {
      failureCategory?: FailureCategory | undefined;
      costUsd?: number | undefined;
      latencyMs?: number | undefined;
    },
  ): Promise<void> {
    const record = this.calls.get(traceId);
    if (record === undefined) {
      throw new UserError(
        `traceId ${JSON.stringify(traceId)} is not a call of this Router (or is too old): ` +
          "use updateOutcome(traceId, goal, changes) for calls made elsewhere",
      );
    }
    await this.intelligence.report({
      traceId,
      goal: this.goal,
      path: record.decision.path,
      ...outcome,
      costUsd: outcome.costUsd ?? record.costUsd,
      latencyMs: outcome.latencyMs ?? record.latencyMs,
      usage: record.usage,
    });
  }

  private remember(record: CallRecord, slot?: Slot): void {
    const traceId = record.decision.traceId;
    this.calls.delete(traceId);
    this.calls.set(traceId, record);
    if (this.calls.size > RECENT_CALLS) this.calls.delete(this.calls.keys().next().value as string);
    if (slot) slot.traceId = traceId;
  }

  // --- reading -------------------------------------------------------------------------------------------
  /** Change a reported outcome of this Router's goal (a late signal). */
  async updateOutcome(traceId: string, changes: OutcomeChanges): Promise<string[]> {
    return this.intelligence.updateOutcome(traceId, this.goal, checkChanges(changes));
  }

  getPolicy(options?: Parameters<RemoteIntelligence["getPolicy"]>[1]): Promise<PolicyAnswer> {
    return this.intelligence.getPolicy(this.goal, options);
  }

  getInsights(options?: { windowHours?: number }): Promise<Record<string, unknown>> {
    return this.intelligence.getInsights(this.goal, options);
  }
}

async function* chunksOf(
  response: Response,
  wire: WireFormat,
  request: ProviderRequest,
): AsyncGenerator<ChatCompletionChunk> {
  if (!response.body)
    throw new ProviderError(`${JSON.stringify(request.path.model)} sent no stream`, { model: request.path.model });
  const parse = wire.eventParser(request);
  for await (const [event, data] of serverSentEvents(response.body)) {
    const chunk = parse(data, event);
    if (chunk !== undefined) yield chunk;
  }
}
