/** Python agents (the core's `kalibr.Router`) and TypeScript agents reporting on one goal feed one policy. */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { test } from "node:test";
import { Router, flush, getInsights, getPolicy } from "@kalibr/sdk";
import { withServices } from "./support/hooks.js";

const services = withServices();

const GOAL = "shared_triage";
const PATHS = ["gpt-4o", "claude-sonnet-4-20250514"];

// What a Python agent of the same team runs: the core's Router pointed at the same service.
const PYTHON_AGENT = `
import sys, kalibr
router = kalibr.Router(goal=${JSON.stringify(GOAL)}, paths=${JSON.stringify(PATHS)}, intelligence=sys.argv[1])
for _ in range(int(sys.argv[2])):
    router.completion("Say hello", force_model="gpt-4o")
    router.report(success=False, failure_category="hallucination_detected")
router.intelligence.flush()
print(router.intelligence.pending_outcomes())
`;

test("outcomes from a Python and a TypeScript client on one goal feed one policy", async () => {
  const router = new Router({ goal: GOAL, paths: PATHS });
  for (const [forceModel, calls] of [
    ["claude-sonnet-4-20250514", 8],
    ["gpt-4o", 2],
  ] as const) {
    for (let call = 0; call < calls; call++) {
      await router.completion("Say hello", { forceModel });
      await router.report(true);
    }
  }
  await flush();

  const spool = join(mkdtempSync(join(tmpdir(), "kalibr-py-")), "spool.db");
  const { stdout, stderr } = await promisify(execFile)("python", ["-c", PYTHON_AGENT, services.service.url, "6"], {
    env: { ...process.env, KALIBR_SPOOL: spool },
  });
  assert.equal(stdout.trim(), "0", "the Python client delivered everything");
  assert.doesNotMatch(stderr, /rejected/);

  const policy = await getPolicy(GOAL);
  assert.equal(policy.outcome_sample_count, 16);
  const insights = (await getInsights(GOAL)) as {
    goals: Array<{ paths: Array<{ model: string; samples: number; success_rate: number }> }>;
  };
  const byModel = Object.fromEntries(
    insights.goals[0]!.paths.map((path) => [path.model, [path.samples, path.success_rate]]),
  );
  assert.deepEqual(byModel, { "gpt-4o": [8, 2 / 8], "claude-sonnet-4-20250514": [8, 1] });
});
