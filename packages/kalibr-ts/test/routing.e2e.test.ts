/** Calls through the sandbox's OpenAI and Anthropic endpoints, decided by a real `kalibr serve`. */

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  AllPathsFailed,
  RemoteIntelligence,
  RequestRejected,
  Router,
  flush,
  getInsights,
  getPolicy,
  updateOutcome,
  type ChatCompletionChunk,
  type Tool,
} from "@kalibr/sdk";
import { countedPerModel } from "./support/services.js";
import { withServices } from "./support/hooks.js";

const services = withServices();

const WEATHER: Tool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

for (const model of ["gpt-4o", "claude-sonnet-4-20250514"]) {
  test(`${model}: usage, and the cost from the core's price table`, async () => {
    const router = new Router({ goal: "usage_check", paths: [model] });
    const response = await router.completion("Repeat after me: twelve tokens or so");
    assert.equal(response.choices[0]!.message.content, "twelve tokens or so");
    const usage = response.usage!;
    assert.ok(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    // gpt-4o is in the price table; this Claude snapshot is not, so its cost is unknown: null, never a guess.
    const expected = model === "gpt-4o" ? (usage.prompt_tokens * 2.5 + usage.completion_tokens * 10) / 1e6 : null;
    assert.equal(response.costUsd, expected);
  });

  test(`${model}: streaming, chunk by chunk, adds up to the completion and reports it`, async () => {
    let judged = "";
    const router = new Router({
      goal: "stream_check",
      paths: [model],
      successWhen: (output) => ((judged = output), true),
    });
    const stream = router.stream("Repeat after me: the quick brown fox jumps over the lazy dog");
    const pieces: string[] = [];
    for await (const chunk of stream) pieces.push((chunk as ChatCompletionChunk).choices[0]?.delta.content ?? "");
    assert.ok(pieces.filter(Boolean).length > 1, "more than one chunk of text");
    assert.equal(pieces.join(""), "the quick brown fox jumps over the lazy dog");
    assert.equal(stream.completion!.choices[0]!.message.content, pieces.join(""));
    assert.equal(judged, pieces.join(""));
    assert.ok(stream.completion!.usage!.completion_tokens > 0);
    assert.equal(stream.decision!.model, model);
  });

  test(`${model}: tool calls in the OpenAI shape, whole and streamed`, async () => {
    const router = new Router({ goal: "tool_check", paths: [{ model, tools: [WEATHER] }] });
    const ask = "Use the get_weather tool for Paris";
    const response = await router.completion(ask, { tool_choice: "required" });
    const [call] = response.choices[0]!.message.tool_calls!;
    assert.equal(call!.function.name, "get_weather");
    assert.equal(typeof JSON.parse(call!.function.arguments).city, "string");
    assert.equal(response.choices[0]!.finish_reason, "tool_calls");
    const streamed = await router.completion(ask, { stream: true, tool_choice: "required" });
    const whole = await streamed.finalCompletion();
    assert.deepEqual(
      JSON.parse(whole.choices[0]!.message.tool_calls![0]!.function.arguments),
      JSON.parse(call!.function.arguments),
    );
  });
}

test("a provider failure falls back to the next path and is blamed on its own path", async () => {
  const router = new Router({ goal: "fallback_check", paths: ["broken-model", "gpt-4o"] });
  const response = await router.completion("Say hello", { forceModel: "broken-model" });
  assert.equal(response.model, "gpt-4o");
  assert.equal(response.attempts.length, 1);
  assert.equal(response.attempts[0]!.decision.model, "broken-model");
  assert.equal(response.attempts[0]!.failureCategory, "provider_error");
  await router.report(true);
  await flush();
  const counted = await countedPerModel(services.service, "fallback_check");
  assert.deepEqual(counted, { "broken-model": 1, "gpt-4o": 1 });
  const insights = (await router.getInsights()) as {
    goals: Array<{ paths: Array<{ model: string; success_rate: number }> }>;
  };
  const rates = Object.fromEntries(insights.goals[0]!.paths.map((path) => [path.model, path.success_rate]));
  assert.deepEqual(rates, { "broken-model": 0, "gpt-4o": 1 });
});

test("every path failing raises AllPathsFailed with each path's error", async () => {
  const router = new Router({ goal: "all_fail_check", paths: ["broken-model"] });
  await assert.rejects(router.completion("Say hello"), (error: unknown) => {
    assert.ok(error instanceof AllPathsFailed);
    assert.equal(error.errors.length, 1);
    return true;
  });
});

test("a request the provider refuses as the caller's fault is raised and blamed on no path", async () => {
  const router = new Router({ goal: "caller_error_check", paths: ["gpt-4o", "claude-sonnet-4-20250514"] });
  const badFormat = { type: "json_schema", json_schema: { name: "x", schema: "not a schema" } };
  await assert.rejects(
    router.completion("Say hello", { forceModel: "gpt-4o", response_format: badFormat }),
    RequestRejected,
  );
  await flush();
  assert.deepEqual(await countedPerModel(services.service, "caller_error_check"), {});
});

test("updateOutcome changes a reported outcome later; an unknown category is refused before any request", async () => {
  const router = new Router({ goal: "resolve_ticket", paths: ["gpt-4o"] });
  const response = await router.completion("Say hello");
  await router.report(true);
  const changed = await updateOutcome(response.traceId, "resolve_ticket", {
    success: false,
    failureCategory: "user_unsatisfied",
  });
  assert.ok(changed.includes("success") && changed.includes("failure_category"), changed.join(","));
  const insights = (await getInsights("resolve_ticket")) as {
    goals: Array<{ success_rate: number; top_failure_modes: unknown }>;
  };
  assert.equal(insights.goals[0]!.success_rate, 0);
  assert.match(JSON.stringify(insights.goals[0]!.top_failure_modes), /user_unsatisfied/);
  await assert.rejects(
    updateOutcome(response.traceId, "resolve_ticket", { failureCategory: "angry" as never }),
    TypeError,
  );
});

test("an outcome the service refuses is kept as a dead letter with its reason; a long reason is cut, not refused", async () => {
  const intelligence = new RemoteIntelligence({ url: services.service.url, apiKey: services.service.apiKey });
  try {
    const router = new Router({ goal: "refusal_check", paths: ["gpt-4o"], intelligence });
    await router.completion("Say hello");
    await router.report(false, `the answer missed: ${"details ".repeat(600)}`);
    const odd = await router.decide({ forceModel: "m".repeat(300) }); // longer than the service takes
    await router.report(true, undefined, { traceId: odd.traceId });
    await intelligence.flush();
    assert.equal(await intelligence.pendingOutcomes(), 0);
    const dead = await intelligence.deadOutcomes();
    assert.deepEqual(
      dead.map((letter) => [letter.payload.trace_id, letter.statusCode]),
      [[odd.traceId, 422]],
    );
    assert.match(dead[0]!.reason, /model_id: String should have at most 256 characters/);
    assert.deepEqual(await countedPerModel(services.service, "refusal_check"), { "gpt-4o": 1 });
  } finally {
    await intelligence.close();
  }
});

test("decide() for a call made elsewhere, and scoreWhen's fractional scores, both counted by the service", async () => {
  const own = new Router({ goal: "own_call", paths: ["gpt-4o", "claude-sonnet-4-20250514"] });
  const decision = await own.decide();
  assert.ok(["gpt-4o", "claude-sonnet-4-20250514"].includes(decision.model));
  await own.report(undefined, undefined, { traceId: decision.traceId, score: 0.5 });
  const scored = new Router({ goal: "scored_call", paths: ["gpt-4o"], scoreWhen: () => 0.75 });
  await scored.completion("Say hello");
  await flush();
  assert.equal(sumOf(await countedPerModel(services.service, "own_call")), 1);
  const insights = (await scored.getInsights()) as { goals: Array<{ success_rate: number }> };
  assert.equal(insights.goals[0]!.success_rate, 0.75);
});

test("learning: traffic moves to the model that answers right", async () => {
  const goal = "solve_arithmetic";
  let expected = 0;
  const router = new Router({
    goal,
    paths: ["bad-model", "good-model"],
    successWhen: (output) => Number(output.match(/-?\d+/)?.[0]) === expected,
  });
  const picks: string[] = [];
  for (let call = 0; call < 120; call++) {
    const [left, right] = [10 + ((call * 7) % 80), 3 + ((call * 13) % 60)];
    expected = left + right;
    const response = await router.completion(`What is ${left} + ${right}? Answer with the number only.`);
    picks.push(response.model);
  }
  const lastForty = picks.slice(-40);
  const good = lastForty.filter((model) => model === "good-model").length;
  assert.ok(good >= 30, `good-model took ${good} of the last 40 calls: ${lastForty.join(",")}`);
  await flush();
  assert.equal((await getPolicy(goal)).recommended_model, "good-model");
});

function sumOf(counts: Record<string, number>): number {
  return Object.values(counts).reduce((total, count) => total + count, 0);
}
