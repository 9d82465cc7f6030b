/** Every TypeScript snippet of the FAQ, run as printed against the sandbox and a real `kalibr serve`. */

import assert from "node:assert/strict";
import { test } from "node:test";
import { flush, type RoutedCompletion } from "@kalibr/sdk";
import { faqSnippets, runSnippets } from "./support/faq.js";
import { countedPerModel } from "./support/services.js";
import { withServices } from "./support/hooks.js";

const services = withServices();

async function counted(goal: string): Promise<number> {
  await flush();
  return Object.values(await countedPerModel(services.service, goal)).reduce((sum, count) => sum + count, 0);
}

test("the FAQ has the TypeScript snippets these tests run", () => {
  const names = [...faqSnippets().keys()].sort();
  assert.deepEqual(names, [
    "explicit-report",
    "force-model",
    "goal-version",
    "params-paths",
    "router-direct",
    "router-per-request",
    "success-when",
  ]);
});

test("router-direct: a completion routed by the service, and its outcome counted", async () => {
  const before = await counted("summarize");
  const { router, response } = await runSnippets("router-direct");
  assert.ok(["gpt-4o", "claude-sonnet-4-20250514"].includes(response.model));
  assert.equal(response.decision.model, response.model);
  assert.equal(response.decision.fallback, false, response.decision.reason);
  assert.match(response.choices[0].message.content, /summary/);
  assert.ok(response.usage.completion_tokens > 0);
  assert.equal(router.goal, "summarize");
  assert.equal(await counted("summarize"), before + 1);
});

test("explicit-report: the answer parsed and validated, the explicit verdict replacing the first report", async () => {
  const before = await counted("summarize");
  const { result, isValid } = await runSnippets("router-direct", "explicit-report");
  assert.equal(typeof result.summary, "string");
  assert.equal(isValid, true);
  assert.equal(await counted("summarize"), before + 1); // one call, reported twice, counted once
});

test("force-model: the second call goes to the first call's model, and its report counts there", async () => {
  const { response1, response2 } = await runSnippets("router-direct", "force-model");
  assert.equal(response2.model, response1.model);
  assert.equal(response2.decision.forced, true);
  assert.notEqual(response2.traceId, response1.traceId);
});

test("success-when: every answer is judged and reported without a report() call", async () => {
  const before = await counted("extract");
  const { router } = await runSnippets("success-when");
  const response: RoutedCompletion = await router.completion([{ role: "user", content: "Say hello" }]);
  assert.equal(response.model, "gpt-4o");
  assert.equal(await counted("extract"), before + 1);
});

test("router-per-request: a Router per request handler, concurrent requests each reporting their own call", async () => {
  const routes = new Map<string, (req: unknown, res: unknown) => Promise<void>>();
  (globalThis as { kalibrFaqApp?: unknown }).kalibrFaqApp = {
    post: (route: string, handler: (req: unknown, res: unknown) => Promise<void>) => routes.set(route, handler),
  };
  await runSnippets("router-per-request");
  const handler = routes.get("/api/extract");
  assert.ok(handler, "the snippet registers POST /api/extract");
  const before = await counted("extract");
  const answers = await Promise.all(
    Array.from({ length: 5 }, (_, index) => {
      const req = { body: { messages: [{ role: "user", content: `Repeat after me: request ${index}` }] } };
      return new Promise<RoutedCompletion>((resolve) => void handler(req, { json: resolve }));
    }),
  );
  answers.forEach((answer, index) => assert.equal(answer.choices[0]!.message.content, `request ${index}`));
  assert.equal(new Set(answers.map((answer) => answer.traceId)).size, 5);
  assert.equal(await counted("extract"), before + 5);
});

test("goal-version: a new goal name starts learning from nothing", async () => {
  const { router } = await runSnippets("goal-version");
  assert.equal(router.goal, "extract_company_v2");
  await router.completion([{ role: "user", content: "Extract the company: Apple makes the iPhone." }]);
  await router.report(true);
  assert.equal(await counted("extract_company_v2"), 1);
});

test("params-paths: one model with two temperatures, each its own path", async () => {
  const { router } = await runSnippets("params-paths");
  const temperatures = new Set<number>();
  for (let call = 0; call < 12; call++) {
    const response: RoutedCompletion = await router.completion([{ role: "user", content: "Write a haiku" }]);
    temperatures.add(response.decision.path.params["temperature"] as number);
    await router.report(true);
  }
  assert.deepEqual([...temperatures].sort(), [0.3, 0.9]);
  assert.equal(await counted("creative_writing"), 12);
});
