/**
 * Which call `report()` without a trace id means: the caller's own last call, per async context.
 *
 * Where the runtime has `AsyncLocalStorage` (Node, Bun, Deno, workerd with nodejs_compat), `beginCall` runs
 * synchronously inside `completion()`/`decide()` (before their first `await`) and enters a new store for the
 * caller's context, so concurrent requests sharing one Router each see their own call. Elsewhere the last
 * call of the Router is used, whoever made it: pass `traceId` to `report()` there.
 */

import { builtin } from "./env.js";

/** Filled with the call's trace id once it is decided. */
export interface Slot {
  traceId: string | undefined;
}

interface Storage<T> {
  getStore(): T | undefined;
  enterWith(store: T): void;
}

type StorageClass = new () => Storage<Map<object, Slot>>;

const MAX_ROUTERS_PER_CONTEXT = 32;

const storageClass: StorageClass | undefined =
  (globalThis as { AsyncLocalStorage?: StorageClass }).AsyncLocalStorage ??
  builtin<{ AsyncLocalStorage: StorageClass }>("node:async_hooks")?.AsyncLocalStorage;

const storage = storageClass ? new storageClass() : undefined;
const lastOfRouter = new WeakMap<object, Slot>();

/** Whether `report()` without a trace id is safe under concurrency in this runtime. */
export const perContextReports = storage !== undefined;

/** Start a call of `owner` in the caller's context; must run before the caller's first `await`. */
export function beginCall(owner: object): Slot {
  const slot: Slot = { traceId: undefined };
  lastOfRouter.set(owner, slot);
  if (storage) {
    const entries = new Map(storage.getStore());
    entries.delete(owner);
    entries.set(owner, slot);
    if (entries.size > MAX_ROUTERS_PER_CONTEXT) entries.delete(entries.keys().next().value as object);
    storage.enterWith(entries);
  }
  return slot;
}

/** The trace id of `owner`'s last call in this context (or anywhere, without AsyncLocalStorage). */
export function lastTraceId(owner: object): string | undefined {
  if (storage) return storage.getStore()?.get(owner)?.traceId;
  return lastOfRouter.get(owner)?.traceId;
}
