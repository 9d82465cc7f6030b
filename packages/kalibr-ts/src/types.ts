/** Values shared by every module: failure categories, messages, paths, decisions, responses. */

import { FAILURE_CATEGORIES } from "./contract.generated.js";
import { UserError } from "./errors.js";

export { FAILURE_CATEGORIES };

export type FailureCategory = (typeof FAILURE_CATEGORIES)[number];

/** `value` as a failure category; anything else is a `TypeError` (`UserError`) listing the valid ones. */
export function checkFailureCategory(value: unknown): FailureCategory | undefined {
  if (value === undefined || value === null) return undefined;
  if ((FAILURE_CATEGORIES as readonly unknown[]).includes(value)) return value as FailureCategory;
  throw new UserError(`unknown failureCategory ${JSON.stringify(value)}: use one of ${FAILURE_CATEGORIES.join(", ")}`);
}

/** Who produced an outcome; the service lets an explicit report replace an automatic one. */
export type OutcomeSource = "explicit" | "success_when" | "score_when" | "error";

export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** A chat message in the OpenAI chat-completions shape. */
export interface Message {
  role: "system" | "developer" | "user" | "assistant" | "tool" | (string & {});
  content?: string | Array<{ type: string; text?: string; [key: string]: unknown }> | null;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
  name?: string;
  [key: string]: unknown;
}

/** A tool in the OpenAI shape (`{ type: 'function', function: { name, description, parameters } }`). */
export interface Tool {
  type?: "function";
  function?: { name: string; description?: string; parameters?: Record<string, unknown> };
  [key: string]: unknown;
}

export interface Price {
  inputPerMtok: number;
  outputPerMtok: number;
}

/** What a caller may declare as a path: a model name, or a model with params and tools. */
export type PathSpec =
  | string
  | {
      model: string;
      params?: Record<string, unknown>;
      tools?: Tool[];
      /** `openai` (any OpenAI-compatible server) or `anthropic`; default: `anthropic` for `claude*` models. */
      provider?: "openai" | "anthropic";
      baseUrl?: string;
      apiKey?: string;
      /** Overrides the price table for this path's cost. */
      price?: Price;
    };

/** A declared path, checked and normalised. */
export interface Path {
  readonly model: string;
  readonly params: Readonly<Record<string, unknown>>;
  readonly tools: readonly Tool[];
  readonly provider: "openai" | "anthropic";
  readonly baseUrl: string | undefined;
  readonly apiKey: string | undefined;
  readonly price: Price | undefined;
  /** Model and params as canonical JSON: how a decision from the service is matched to this path. */
  readonly key: string;
}

/** Which path a call takes, and why. Everything about one call lives here and in the response. */
export interface Decision {
  readonly traceId: string;
  readonly goal: string;
  readonly model: string;
  readonly path: Path;
  readonly reason: string;
  readonly exploration: boolean;
  readonly confidence: number;
  /** True when the service could not be asked and the first path was used. */
  readonly fallback: boolean;
  /** True for `forceModel` calls and for fallbacks after a provider failure. */
  readonly forced: boolean;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** A chat completion in the OpenAI shape, whichever provider answered. */
export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: Array<{
    index: number;
    message: { role: "assistant"; content: string | null; tool_calls?: ToolCall[]; [key: string]: unknown };
    finish_reason: string | null;
    [key: string]: unknown;
  }>;
  usage?: Usage;
  [key: string]: unknown;
}

/** A streamed chunk in the OpenAI shape. */
export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: Array<{
    index: number;
    delta: {
      role?: "assistant";
      content?: string | null;
      tool_calls?: Array<{
        index: number;
        id?: string;
        type?: "function";
        function?: { name?: string; arguments?: string };
      }>;
    };
    finish_reason: string | null;
  }>;
  usage?: Usage | null;
}

/** A path that failed before the answer came, blamed on its own path. */
export interface Attempt {
  readonly decision: Decision;
  readonly error: string;
  readonly failureCategory: FailureCategory;
}

/** What `router.completion()` returns: the OpenAI-shaped response plus how it was routed. */
export interface RoutedCompletion extends ChatCompletion {
  /** The path's model (what `forceModel` takes); the provider's own name for it is `providerModel`. */
  model: string;
  providerModel: string;
  decision: Decision;
  traceId: string;
  costUsd: number | null;
  latencyMs: number;
  attempts: Attempt[];
}
