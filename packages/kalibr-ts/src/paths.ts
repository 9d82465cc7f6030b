/** Checking what the caller declares: goals, paths, messages; and trace ids. */

import { UserError } from "./errors.js";
import type { OutcomeChanges } from "./remote.js";
import { checkFailureCategory, type Message, type Path, type PathSpec, type Tool } from "./types.js";

const GOAL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$/;

export function checkGoal(goal: unknown): string {
  if (typeof goal === "string" && GOAL_PATTERN.test(goal)) return goal;
  throw new UserError(
    `invalid goal ${JSON.stringify(goal)}: use 1-128 letters, digits or _.:/- starting with a letter or digit, ` +
      "e.g. 'extract_company_v2'",
  );
}

/** JSON with object keys sorted, so equal params give equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return Object.fromEntries(entries.map(([key, item]) => [key, sortKeys(item)]));
  }
  return value;
}

export function pathKey(model: string, params: Readonly<Record<string, unknown>>): string {
  return canonicalJson([model, params]);
}

export function parsePaths(specs: unknown): Path[] {
  if (!Array.isArray(specs) || specs.length === 0) {
    throw new UserError(
      `paths must be a non-empty array of model names or { model, params, tools } objects, got ${describe(specs)}`,
    );
  }
  const paths = specs.map((spec, index) => parsePath(spec as PathSpec, index));
  const seen = new Set<string>();
  for (const path of paths) {
    if (seen.has(path.key)) {
      throw new UserError(`path ${path.key} is declared twice: give each path a different model or params`);
    }
    seen.add(path.key);
  }
  return paths;
}

function parsePath(spec: PathSpec, index: number): Path {
  const declared = typeof spec === "string" ? { model: spec } : spec;
  if (
    declared === null ||
    typeof declared !== "object" ||
    typeof declared.model !== "string" ||
    !declared.model.trim()
  ) {
    throw new UserError(
      `paths[${index}] is ${describe(spec)}: give a model name ('gpt-4o') or { model: 'gpt-4o', params: {...} }`,
    );
  }
  const params = declared.params ?? {};
  if (typeof params !== "object" || params === null || Array.isArray(params)) {
    throw new UserError(`paths[${index}].params is ${describe(params)}: give an object such as { temperature: 0.2 }`);
  }
  const tools = declared.tools ?? [];
  if (!Array.isArray(tools)) {
    throw new UserError(`paths[${index}].tools is ${describe(tools)}: give an array of tools in the OpenAI shape`);
  }
  const provider = declared.provider ?? (declared.model.startsWith("claude") ? "anthropic" : "openai");
  if (provider !== "openai" && provider !== "anthropic") {
    throw new UserError(`paths[${index}].provider is ${describe(provider)}: use 'openai' or 'anthropic'`);
  }
  return makePath({
    model: declared.model,
    params: { ...params },
    tools: [...tools],
    provider,
    baseUrl: declared.baseUrl,
    apiKey: declared.apiKey,
    price: declared.price,
  });
}

/** A frozen Path. Its `apiKey` is not enumerable, so a response sent on as JSON (`res.json(response)`) never
 * carries a provider key. */
export function makePath(fields: Omit<Path, "key">): Path {
  const { apiKey, ...visible } = fields;
  const path = { ...visible, params: Object.freeze({ ...visible.params }), tools: Object.freeze([...visible.tools]) };
  Object.defineProperty(path, "apiKey", { value: apiKey, enumerable: false });
  Object.defineProperty(path, "key", { value: pathKey(fields.model, fields.params), enumerable: false });
  return Object.freeze(path) as Path;
}

/** The tools' names joined by commas (the wire contract's `tool_id`), or null without tools. */
export function toolId(path: Path): string | null {
  const names = path.tools.map((tool: Tool) => tool.function?.name ?? (tool["name"] as string | undefined) ?? "");
  return names.length ? names.join(",") : null;
}

export function checkMessages(messages: unknown): Message[] {
  if (typeof messages === "string") return [{ role: "user", content: messages }];
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new UserError(
      `messages must be a non-empty array of { role, content } objects, or a string; got ${describe(messages)}`,
    );
  }
  messages.forEach((message, index) => {
    if (message === null || typeof message !== "object" || typeof message.role !== "string") {
      throw new UserError(
        `messages[${index}] is ${describe(message)}: each message is an object with a role and content`,
      );
    }
  });
  return messages as Message[];
}

/** 32 hex digits, the first 12 the time in milliseconds, so trace ids sort by time (like a UUIDv7). */
export function newTraceId(): string {
  const random = crypto.getRandomValues(new Uint8Array(10));
  const tail = Array.from(random, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return Date.now().toString(16).padStart(12, "0").slice(-12) + tail;
}

export function describe(value: unknown): string {
  if (typeof value === "function") return "a function";
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

export function checkScore(value: unknown, what: string): number {
  if (typeof value !== "number" || !(value >= 0 && value <= 1)) {
    throw new UserError(`${what} ${describe(value)}: give a score between 0 and 1`);
  }
  return value;
}

export function checkChanges(changes: OutcomeChanges): OutcomeChanges {
  if (changes === null || typeof changes !== "object") {
    throw new UserError(
      `changes is ${describe(changes)}: give e.g. { success: false, failureCategory: 'user_unsatisfied' }`,
    );
  }
  checkFailureCategory(changes.failureCategory);
  if (changes.score !== undefined) checkScore(changes.score, "score is");
  return changes;
}
