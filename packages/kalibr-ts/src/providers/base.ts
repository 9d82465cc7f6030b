/**
 * What a provider is (a wire format: build a request, parse answers and stream events, no I/O), and the one
 * place that does provider I/O over `fetch`, translating failures into `ProviderError`s.
 */

import { ProviderError, RequestRejected, UserError } from "../errors.js";
import { env } from "../env.js";
import type { ChatCompletion, ChatCompletionChunk, FailureCategory, Message, Path } from "../types.js";

export interface ProviderRequest {
  path: Path;
  messages: Message[];
  /** The path's params with the call's own on top. */
  params: Record<string, unknown>;
  stream: boolean;
}

export interface HttpCall {
  url: string;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

/** Turns one stream's server-sent events into OpenAI-shaped chunks (stateful: one per stream). */
export type EventParser = (data: string, event: string | undefined) => ChatCompletionChunk | undefined;

export interface WireFormat {
  build(request: ProviderRequest): HttpCall;
  parse(body: Record<string, unknown>, request: ProviderRequest): ChatCompletion;
  eventParser(request: ProviderRequest): EventParser;
  errorMessage(body: string): string;
}

// Statuses that mean the caller's request itself is wrong: raised to the caller, never blamed on the path.
const CALLER_ERROR_STATUSES = new Set([400, 404, 405, 413, 415, 422]);

export function categoryForStatus(status: number, body: string): FailureCategory {
  if (status === 429) return "rate_limited";
  if (status === 401 || status === 403) return "auth_error";
  if (status === 408 || status === 504) return "timeout";
  if ((status === 400 || status === 413) && body.toLowerCase().includes("context")) return "context_exceeded";
  return "provider_error";
}

/** (base URL, API key) of a path: its own, else the environment's, else the vendor's URL (which needs a key). */
export function endpoint(path: Path, keyEnv: string, baseEnv: string, defaultBase: string): [string, string] {
  const baseUrl = (path.baseUrl ?? env(baseEnv) ?? defaultBase).replace(/\/+$/, "");
  const apiKey = path.apiKey ?? env(keyEnv);
  if (apiKey) return [baseUrl, apiKey];
  if (baseUrl === defaultBase) {
    throw new UserError(
      `no API key for path ${JSON.stringify(path.model)}: set ${keyEnv}, or give the path an apiKey, ` +
        "or a baseUrl for a local compatible server",
    );
  }
  return [baseUrl, "not-needed"];
}

export type Fetch = typeof fetch;

/**
 * POST the call. For a stream, the response once its status is checked (the body still unread); else the whole
 * body's text, read once. `timeoutMs` bounds the whole answer, or for a stream the wait for its first byte (a long
 * answer may stream for longer).
 */
export async function send<Stream extends boolean = false>(
  wire: WireFormat,
  call: HttpCall,
  model: string,
  fetcher: Fetch,
  timeoutMs: number,
  stream?: Stream,
): Promise<Stream extends true ? Response : string> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DOMException("timed out", "TimeoutError")), timeoutMs);
  let response: Response;
  let text: string | undefined;
  try {
    response = await fetcher(call.url, {
      method: "POST",
      headers: call.headers,
      body: JSON.stringify(call.body),
      signal: controller.signal,
    });
    if (!stream) text = await response.text();
  } catch (error) {
    throw transportError(error, model);
  } finally {
    clearTimeout(timer);
  }
  if (response.status >= 400) {
    const body = text ?? (await response.text().catch(() => ""));
    const message = `${JSON.stringify(model)} answered HTTP ${response.status}: ${wire.errorMessage(body)}`;
    const failureCategory = categoryForStatus(response.status, body);
    // A prompt too long for this model is no fault of the request: another path may have a larger window.
    const rejected = CALLER_ERROR_STATUSES.has(response.status) && failureCategory !== "context_exceeded";
    const ErrorClass = rejected ? RequestRejected : ProviderError;
    throw new ErrorClass(message, { model, status: response.status, failureCategory });
  }
  return (text ?? response) as Stream extends true ? Response : string;
}

/** A whole answer's JSON object. */
export function readJson(text: string, model: string): Record<string, unknown> {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new ProviderError(`${JSON.stringify(model)} answered with a body that is not JSON`, { model });
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new ProviderError(`${JSON.stringify(model)} answered with JSON that is not an object`, { model });
  }
  return body as Record<string, unknown>;
}

export function transportError(error: unknown, model: string): ProviderError {
  if (error instanceof ProviderError) return error;
  const name = (error as { name?: string } | null)?.name;
  if (name === "TimeoutError" || name === "AbortError") {
    return new ProviderError(`${JSON.stringify(model)} timed out`, { model, failureCategory: "timeout" });
  }
  return new ProviderError(`${JSON.stringify(model)} could not be reached: ${String(error)}`, { model });
}

/** The server-sent events of a response body, as (event, data) pairs. */
export async function* serverSentEvents(
  body: ReadableStream<Uint8Array>,
): AsyncGenerator<[string | undefined, string]> {
  const decoder = new TextDecoder();
  let buffer = "";
  let event: string | undefined;
  let data: string[] = [];
  const reader = body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let newline: number;
      while ((newline = buffer.search(/\r?\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(buffer[newline] === "\r" ? newline + 2 : newline + 1);
        if (line === "") {
          if (data.length) yield [event, data.join("\n")];
          event = undefined;
          data = [];
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = value;
          else if (field === "data") data.push(value);
        }
      }
      if (done) break;
    }
    if (data.length) yield [event, data.join("\n")];
  } finally {
    reader.releaseLock();
  }
}

export function textOf(content: unknown): string {
  if (content === null || content === undefined) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((part) => (part && typeof part === "object" ? String(part.text ?? "") : "")).join("");
  }
  return String(content);
}

export function errorMessageOf(body: string): string {
  try {
    const error = (JSON.parse(body) as { error?: unknown }).error;
    if (error && typeof error === "object")
      return String((error as { message?: unknown }).message ?? JSON.stringify(error));
    return String(error ?? body.slice(0, 300));
  } catch {
    return body.slice(0, 300);
  }
}
