/**
 * `@kalibr/sdk`: outcome-aware LLM routing against a self-hosted Kalibr service (`kalibr serve`).
 *
 * ```ts
 * import { Router } from '@kalibr/sdk';
 * const router = new Router({ goal: 'summarize', paths: ['gpt-4o', 'claude-sonnet-4-20250514'] });
 * const response = await router.completion(messages);
 * await router.report(true);
 * ```
 *
 * This entry uses only `fetch`, `AbortSignal` and other Web APIs, so it runs on Node 20+, Deno, Bun and edge
 * runtimes; the durable file spool is in `@kalibr/sdk/node`.
 */

export { CircuitBreaker, DEFAULT_RESILIENCE, type BreakerState, type Resilience } from "./breaker.js";
export { perContextReports } from "./context.js";
export {
  AllPathsFailed,
  IntelligenceUnavailable,
  KalibrError,
  ProviderError,
  RequestRejected,
  UserError,
} from "./errors.js";
export type { DeadOutcome, OutcomePayload, SpoolStorage } from "./outbox.js";
export { PRICE_TABLE, PRICE_TABLE_VERSION, costOf, priceFor } from "./pricing.js";
export {
  RemoteIntelligence,
  type IntelligenceOptions,
  type OutcomeChanges,
  type PolicyAnswer,
  type PolicyConstraints,
} from "./remote.js";
export { Router, type CompletionOptions, type ReportOptions, type RouterOptions } from "./router.js";
export { flush, getInsights, getPolicy, sharedIntelligence, updateOutcome, type ServiceOption } from "./shared.js";
export { CompletionStream } from "./stream.js";
export {
  FAILURE_CATEGORIES,
  type Attempt,
  type ChatCompletion,
  type ChatCompletionChunk,
  type Decision,
  type FailureCategory,
  type Message,
  type Path,
  type PathSpec,
  type Price,
  type RoutedCompletion,
  type Tool,
  type ToolCall,
  type Usage,
} from "./types.js";
