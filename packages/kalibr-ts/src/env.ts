/** The runtime's environment variables and Node-only built-ins, read without importing any `node:` module. */

interface NodeLikeProcess {
  env?: Record<string, string | undefined>;
  getBuiltinModule?: (name: string) => unknown;
}

function runtimeProcess(): NodeLikeProcess | undefined {
  return (globalThis as { process?: NodeLikeProcess }).process;
}

/** An environment variable, trimmed; undefined when unset, empty or when the runtime has no `process.env`. */
export function env(name: string): string | undefined {
  let value: string | undefined;
  try {
    value = runtimeProcess()?.env?.[name]?.trim();
  } catch {
    return undefined; // Deno without --allow-env throws here
  }
  return value ? value : undefined;
}

/** A Node built-in (`node:async_hooks`) through `process.getBuiltinModule`, where the runtime has one. */
export function builtin<T>(name: string): T | undefined {
  try {
    return runtimeProcess()?.getBuiltinModule?.(name) as T | undefined;
  } catch {
    return undefined;
  }
}
