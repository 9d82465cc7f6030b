/**
 * The main entry under Bun and Deno (from devDependencies), against the same sandbox and `kalibr serve`: concurrent
 * handlers of one Router, calling whole and streamed, each report their own call without a trace id, and the service
 * stores one outcome per call with its handler's success; outcomes still in their batch window leave before the
 * script ends, as on Node.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { test } from "node:test";
import { PACKAGE_DIR, countedPerModel, type Service } from "./support/services.js";
import { withServices } from "./support/hooks.js";

const services = withServices();

const BIN = join(PACKAGE_DIR, "node_modules/.bin");

// Deno gets only what the main entry needs: the loopback network (the service, the sandbox) and the environment.
const RUNTIMES: Record<string, string[]> = {
  bun: [join(BIN, "bun")],
  deno: [join(BIN, "deno"), "run", "--no-lock", "--no-prompt", "--allow-net=127.0.0.1", "--allow-env"],
};

/** Run a script of build/support under `runtime`; its output. */
async function run(runtime: string, script: string, args: string[] = [], env: Record<string, string> = {}) {
  const [command, ...options] = RUNTIMES[runtime]!;
  const { stdout } = await promisify(execFile)(
    command!,
    [...options, join(PACKAGE_DIR, "build/support", script), ...args],
    {
      cwd: PACKAGE_DIR,
      env: { ...process.env, ...env, DENO_NO_UPDATE_CHECK: "1" },
      timeout: 60_000, // a runtime that never exits fails the test instead of hanging the suite
    },
  );
  return stdout;
}

type Tally = Record<string, { samples: number; successes: number }>;

for (const runtime of Object.keys(RUNTIMES)) {
  test(`${runtime}: concurrent handlers of one Router each report their own call`, async () => {
    const goal = `runtime_${runtime}`;
    const stdout = await run(runtime, "runtime-smoke.js", [], { KALIBR_SMOKE_GOAL: goal });
    const ran = JSON.parse(stdout.trim().split("\n").at(-1)!) as {
      runtime: string;
      perContextReports: boolean;
      expected: Tally;
    };
    assert.equal(ran.runtime, runtime);
    assert.equal(ran.perContextReports, true, `${runtime} has AsyncLocalStorage`);
    assert.equal(sum(ran.expected), 6);
    assert.ok(ran.expected["gpt-4o"] && ran.expected["claude-sonnet-4-20250514"], "both paths were called");
    assert.deepEqual(await storedPerModel(services.service, goal), ran.expected);
  });

  test(`${runtime}: outcomes still waiting for their batch when a script ends are delivered`, async () => {
    const goal = `exit_${runtime}`;
    await run(runtime, "report-and-exit.js", ["3", goal]);
    assert.deepEqual(await countedPerModel(services.service, goal), { "gpt-4o": 3 });
  });
}

/** Outcomes the service stored for `goal`: per model, how many and how many successes. */
async function storedPerModel(service: Service, goal: string): Promise<Tally> {
  const response = await fetch(`${service.url}/api/v1/intelligence/insights?goal=${goal}`, {
    headers: { "X-API-Key": service.apiKey },
  });
  const body = (await response.json()) as {
    goals: Array<{ goal: string; paths: Array<{ model: string; samples: number; success_rate: number }> }>;
  };
  const stored: Tally = {};
  for (const path of body.goals.find((item) => item.goal === goal)?.paths ?? []) {
    if (path.samples)
      stored[path.model] = { samples: path.samples, successes: Math.round(path.success_rate * path.samples) };
  }
  return stored;
}

function sum(tally: Tally): number {
  return Object.values(tally).reduce((total, { samples }) => total + samples, 0);
}
