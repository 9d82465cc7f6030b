/**
 * The real processes the end-to-end tests drive over HTTP: the sandbox (simulated models) and `kalibr serve`,
 * each started with `kalibr` from PATH (the nox session puts its venv's first) on a free loopback port.
 */

import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const REPO_DIR = resolve(PACKAGE_DIR, "../..");
/** CI puts shared/ beside the clone; KALIBR_SHARED_DIR points elsewhere. */
export const SHARED_DIR = process.env["KALIBR_SHARED_DIR"] ?? resolve(REPO_DIR, "../shared");
const SCENARIO = join(PACKAGE_DIR, "test/fixtures/sandbox-scenario.json");

export interface Running {
  child: ChildProcess;
  stop(): Promise<void>;
}

/** Start `command` and wait until its output matches `ready`; the match and a way to stop it. */
export function startProcess(args: string[], ready: RegExp): Promise<Running & { match: RegExpMatchArray }> {
  const child = spawn("kalibr", args, {
    env: { ...process.env, PYTHONUNBUFFERED: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
  };
  return new Promise((resolveStart, rejectStart) => {
    let output = "";
    const onData = (data: Buffer) => {
      output += data.toString();
      const match = output.match(ready);
      if (match) {
        child.stdout!.off("data", onData);
        child.stdout!.resume();
        child.stderr!.resume();
        resolveStart({ child, match, stop });
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", (data: Buffer) => (output += data.toString()));
    child.once("error", rejectStart);
    child.once("exit", (code) =>
      rejectStart(new Error(`kalibr ${args.join(" ")} exited (${code}) before ready:\n${output}`)),
    );
  });
}

export interface Sandbox extends Running {
  openaiBaseUrl: string;
  anthropicBaseUrl: string;
}

export async function startSandbox(): Promise<Sandbox> {
  const started = await startProcess(
    ["sandbox", "--scenario", SCENARIO, "--port", "0"],
    /OPENAI_BASE_URL=(\S+)[\s\S]*ANTHROPIC_BASE_URL=(\S+)/,
  );
  return { ...started, openaiBaseUrl: started.match[1]!, anthropicBaseUrl: started.match[2]! };
}

export interface Service extends Running {
  url: string;
  apiKey: string;
  store: string;
  /** Start the service again on the same port and store (after `stop()`). */
  restart(): Promise<Service>;
}

/** A fresh SQLite store with one tenant's key (`kalibr keys create`), served by `kalibr serve`. */
export async function startService(store?: string, apiKey?: string, port = 0): Promise<Service> {
  const storeUrl = store ?? `sqlite:///${join(mkdtempSync(join(tmpdir(), "kalibr-ts-")), "kalibr.db")}`;
  const key = apiKey ?? (await createKey(storeUrl, "acme"));
  const started = await startProcess(
    ["serve", "--store", storeUrl, "--port", String(port), "--log-level", "warning"],
    /listening on (http:\/\/\S+)/,
  );
  const url = started.match[1]!;
  const restart = () => startService(storeUrl, key, Number(new URL(url).port));
  return { ...started, url, apiKey: key, store: storeUrl, restart };
}

/** A new API key for `tenant`, made the operator's way. */
export async function createKey(storeUrl: string, tenant: string): Promise<string> {
  const { stdout } = await promisify(execFile)("kalibr", ["keys", "create", "--tenant", tenant, "--store", storeUrl]);
  return stdout.trim();
}

/** Point the SDK's defaults (and the providers) at these processes, as an operator's environment would. */
export function useEnvironment(sandbox: Sandbox, service: Service): void {
  process.env["OPENAI_BASE_URL"] = sandbox.openaiBaseUrl;
  process.env["OPENAI_API_KEY"] = "sandbox";
  process.env["ANTHROPIC_BASE_URL"] = sandbox.anthropicBaseUrl;
  process.env["ANTHROPIC_API_KEY"] = "sandbox";
  process.env["KALIBR_INTELLIGENCE_URL"] = service.url;
  process.env["KALIBR_API_KEY"] = service.apiKey;
  // On a loaded CI machine a cold service may take seconds to answer; timeouts have tests of their own.
  process.env["KALIBR_INTELLIGENCE_TIMEOUT"] ??= "10";
}

/** Outcomes the service counted for `goal`, per model, from its insights. */
export async function countedPerModel(service: Service, goal: string): Promise<Record<string, number>> {
  const response = await fetch(`${service.url}/api/v1/intelligence/insights?goal=${goal}`, {
    headers: { "X-API-Key": service.apiKey },
  });
  const body = (await response.json()) as { goals: Array<{ goal: string; paths: Array<Record<string, unknown>> }> };
  const counts: Record<string, number> = {};
  for (const path of body.goals.find((item) => item.goal === goal)?.paths ?? []) {
    const model = String(path["model_id"] ?? path["model"]);
    counts[model] = (counts[model] ?? 0) + Number(path["sample_count"] ?? path["samples"] ?? 0);
  }
  return counts;
}
