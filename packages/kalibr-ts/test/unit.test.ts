/** Unit tests: the pieces that need no service, with fakes where a network would be. */

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import {
  CircuitBreaker,
  FAILURE_CATEGORIES,
  RemoteIntelligence,
  Router,
  UserError,
  costOf,
  type Resilience,
} from "@kalibr/sdk";
import { newTraceId } from "../dist/paths.js";
import { FileSpool } from "@kalibr/sdk/node";
import { Outbox, Refused, type Answer, type OutcomePayload } from "../dist/outbox.js";
import { toAnthropicMessages } from "../dist/providers/anthropic.js";
import { serverSentEvents } from "../dist/providers/base.js";
import { PACKAGE_DIR } from "./support/services.js";

test("the main entry's whole import graph uses no node: module; only node.js does, loaded on demand", () => {
  const seen = new Set<string>();
  const dynamic: string[] = [];
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = readFileSync(file, "utf8");
    for (const [, specifier] of source.matchAll(/^(?:import|export)\s[^;]*?from\s+"([^"]+)"/gm)) {
      assert.ok(!specifier!.startsWith("node:"), `${file} imports ${specifier}`);
      visit(resolve(dirname(file), specifier!));
    }
    for (const [, specifier] of source.matchAll(/import\("([^"]+)"\)/g)) dynamic.push(specifier!);
  };
  visit(join(PACKAGE_DIR, "dist/index.js"));
  assert.ok(seen.size > 10, "the walk followed the imports");
  assert.deepEqual(dynamic, ["./node.js"]);
  assert.match(readFileSync(join(PACKAGE_DIR, "dist/node.js"), "utf8"), /from "node:fs"/);
});

test("an unknown failure category is a TypeError listing the twelve valid ones", async () => {
  assert.equal(FAILURE_CATEGORIES.length, 12);
  const { router } = fakeRouter();
  await router.completion("hi");
  await assert.rejects(router.report(false, undefined, { failureCategory: "oops" as never }), (error: unknown) => {
    assert.ok(error instanceof TypeError && error instanceof UserError);
    for (const category of FAILURE_CATEGORIES) assert.ok(error.message.includes(category), category);
    return true;
  });
});

test("bad router options name the problem and the fix", () => {
  assert.throws(() => new Router({ goal: "bad goal!", paths: ["gpt-4o"] }), /invalid goal "bad goal!"/);
  assert.throws(() => new Router({ goal: "g", paths: [] }), /paths must be a non-empty array/);
  assert.throws(() => new Router({ goal: "g", paths: ["gpt-4o", "gpt-4o"] }), /declared twice/);
  const both = { goal: "g", paths: ["gpt-4o"], successWhen: () => true, scoreWhen: () => 1 };
  assert.throws(() => new Router(both), /successWhen or scoreWhen, not both/);
  assert.throws(() => new RemoteIntelligence({ url: "localhost:8400" }), /invalid intelligence URL/);
  assert.throws(
    () => new RemoteIntelligence({ url: "http://x", resilience: { decideTimeoutMs: 0 } }),
    /positive number/,
  );
});

test("the breaker opens after breakerAfter fast failures or one timeout, and lets one probe through per cool-down", () => {
  let now = 0;
  const breaker = new CircuitBreaker(3, 1000, () => now);
  breaker.recordFailure();
  breaker.recordFailure();
  assert.equal(breaker.state, "closed");
  breaker.recordFailure();
  assert.equal(breaker.state, "open");
  assert.equal(breaker.allow(), false);
  now = 1000;
  assert.equal(breaker.allow(), true);
  assert.equal(breaker.state, "half-open");
  assert.equal(breaker.allow(), false, "one probe at a time");
  breaker.recordFailure();
  assert.equal(breaker.state, "open");
  now = 2000;
  assert.equal(breaker.allow(), true);
  breaker.recordSuccess();
  assert.equal(breaker.state, "closed");
  breaker.recordFailure(true);
  assert.equal(breaker.state, "open", "a timeout opens at once");
});

test("the outbox keeps a newer report of a call sent meanwhile, and settles each once", async () => {
  const sent: OutcomePayload[][] = [];
  let release: (answers: Answer[]) => void = () => undefined;
  const outbox = new Outbox(
    "e",
    (payloads) => {
      sent.push(payloads);
      return new Promise((resolve) => (release = resolve));
    },
    new CircuitBreaker(3, 1000),
    undefined,
    60_000, // nothing leaves before flush()
  );
  const turn = () => new Promise((resolve) => setImmediate(resolve));
  await outbox.add({ trace_id: "t1", score: 0 });
  const flushed = outbox.flush();
  await turn();
  await outbox.add({ trace_id: "t1", score: 1 }); // while the first is in flight
  await outbox.add({ trace_id: "t2", score: 1 });
  release(["accepted"]);
  await turn();
  release(["accepted", "accepted"]);
  await flushed;
  assert.deepEqual(
    sent.map((batch) => batch.map((payload) => [payload.trace_id, payload["score"]])),
    [
      [["t1", 0]],
      [
        ["t1", 1],
        ["t2", 1],
      ],
    ],
    "the newer report of t1 is sent again, with t2 in the same batch",
  );
  assert.equal(await outbox.count(), 0);
  await outbox.flush();
  assert.equal(sent.length, 2);
  outbox.close();
});

test("refusals as the Python spool: a refused batch is split until the refused outcome is alone; it is kept dead with its reason", async () => {
  const spool = new FileSpool(join(mkdtempSync(join(tmpdir(), "kalibr-dead-")), "spool.jsonl"));
  const requests: string[][] = [];
  // A service that refuses any request holding "bad" as a whole, refuses "gone" on its own and is rate
  // limited for "later".
  const service = async (payloads: OutcomePayload[]): Promise<Answer[]> => {
    requests.push(payloads.map((payload) => payload.trace_id));
    if (payloads.some((payload) => payload.trace_id === "bad")) {
      throw new Refused(422, "outcomes.0.model_id: String should have at most 256 characters");
    }
    return payloads.map((payload) =>
      payload.trace_id === "gone"
        ? new Refused(404, "unknown trace_id 'gone'")
        : payload.trace_id === "later"
          ? "retry"
          : "accepted",
    );
  };
  const outbox = new Outbox("e", service, new CircuitBreaker(3, 1000), spool, 60_000);
  for (const traceId of ["a", "b", "bad", "c", "gone", "later"]) await outbox.add({ trace_id: traceId });
  await outbox.flush();
  assert.deepEqual(requests[0], ["a", "b", "bad", "c", "gone", "later"]);
  assert.deepEqual(requests.slice(1, 4), [["a", "b", "bad"], ["a"], ["b", "bad"]]);
  assert.ok(requests.some((request) => request.length === 1 && request[0] === "bad"));
  const dead = await outbox.deadLetters();
  assert.deepEqual(
    dead.map((letter) => [letter.payload.trace_id, letter.statusCode]),
    [
      ["bad", 422],
      ["gone", 404],
    ],
  );
  assert.match(dead[0]!.reason, /model_id/);
  assert.equal(await outbox.count(), 1, "the rate-limited outcome waits for a retry");
  outbox.close();

  const restarted = new Outbox("e", service, new CircuitBreaker(3, 1000), spool, 60_000);
  assert.equal(await restarted.count(), 1);
  assert.deepEqual(
    (await restarted.deadLetters()).map((letter) => [letter.payload.trace_id, letter.reason]),
    dead.map((letter) => [letter.payload.trace_id, letter.reason]),
    "dead letters survive in the file spool",
  );
  restarted.close();
});

test("server-sent events parse the same however the bytes are split", async () => {
  const text = 'event: a\ndata: {"x":1}\n\n: comment\ndata: line one\ndata: line two\r\n\r\ndata: [DONE]\n\n';
  const bytes = new TextEncoder().encode(text);
  for (const size of [1, 3, 7, bytes.length]) {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < bytes.length; at += size) controller.enqueue(bytes.slice(at, at + size));
        controller.close();
      },
    });
    const events: Array<[string | undefined, string]> = [];
    for await (const event of serverSentEvents(body)) events.push(event);
    assert.deepEqual(events, [
      ["a", '{"x":1}'],
      [undefined, "line one\nline two"],
      [undefined, "[DONE]"],
    ]);
  }
});

test("OpenAI-shaped messages become Anthropic's system text and alternating turns with tool blocks", () => {
  const [system, messages] = toAnthropicMessages([
    { role: "system", content: "Be brief." },
    { role: "user", content: "Weather in Paris?" },
    {
      role: "assistant",
      content: null,
      tool_calls: [{ id: "c1", type: "function", function: { name: "w", arguments: '{"city":"Paris"}' } }],
    },
    { role: "tool", tool_call_id: "c1", content: "sunny" },
    { role: "user", content: "Thanks" },
  ]);
  assert.equal(system, "Be brief.");
  assert.deepEqual(messages, [
    { role: "user", content: [{ type: "text", text: "Weather in Paris?" }] },
    { role: "assistant", content: [{ type: "tool_use", id: "c1", name: "w", input: { city: "Paris" } }] },
    {
      role: "user",
      content: [
        { type: "tool_result", tool_use_id: "c1", content: "sunny" },
        { type: "text", text: "Thanks" },
      ],
    },
  ]);
});

test("cost comes from the price table, dated snapshots included; an unknown model's cost is null", () => {
  const usage = { prompt_tokens: 1_000_000, completion_tokens: 1_000_000, total_tokens: 2_000_000 };
  assert.equal(costOf({ model: "gpt-4o-mini", price: undefined }, usage), 0.15 + 0.6);
  assert.equal(costOf({ model: "gpt-4o-2024-08-06", price: undefined }, usage), 2.5 + 10);
  assert.equal(costOf({ model: "no-such-model", price: undefined }, usage), null);
});

test("one Router shared by concurrent tasks: report() without a trace id reports each task's own call", async () => {
  const { router, reported } = fakeRouter();
  const traceIds = await Promise.all(
    Array.from({ length: 8 }, async (_, index) => {
      await new Promise((resolve) => setTimeout(resolve, (index * 7) % 5));
      const response = await router.completion(`task ${index}`);
      await new Promise((resolve) => setTimeout(resolve, (index * 3) % 4));
      await router.report(index % 2 === 0, `task ${index}`);
      return response.traceId;
    }),
  );
  await router.intelligence.flush();
  traceIds.forEach((traceId, index) => {
    const report = reported.find((body) => body["failure_reason"] === `task ${index}`);
    assert.equal(report?.["trace_id"], traceId, `task ${index} reported its own call`);
    assert.equal(report?.["success"], index % 2 === 0);
  });
});

test("a response sent on as JSON carries no provider key, yet the provider gets it", async () => {
  const { router, providerKeys } = fakeRouter();
  const response = await router.completion("hi");
  assert.doesNotMatch(JSON.stringify(response), /sk-never-in-json/);
  const forced = await router.completion("hi", { forceModel: "gpt-4o-mini" }); // a model outside the paths
  assert.doesNotMatch(JSON.stringify(forced), /sk-never-in-json/);
  assert.deepEqual(providerKeys, ["Bearer sk-never-in-json", "Bearer sk-never-in-json"]);
});

interface FakeRouter {
  router: Router;
  reported: Array<Record<string, unknown>>;
  providerKeys: string[];
  /** Every trace id the fake service issued, in order, and each decide request's `count`. */
  issued: string[];
  counts: number[];
  /** Resolves once the service has answered its `n`th decide request. */
  answered(n: number): Promise<void>;
}

test("decisions fetched ahead in batches: every call, concurrent ones too, takes its own, each reported once", async () => {
  const { router, reported, issued, counts } = fakeRouter({ decideAheadMaxAgeMs: 60_000 }, (text) => text !== "");
  const traceIds: string[] = [];
  for (let call = 0; call < 150; call++) traceIds.push((await router.completion(`call ${call}`)).traceId);
  const sequentialDecides = counts.length;
  const concurrent = await Promise.all(Array.from({ length: 100 }, (_, call) => router.completion(`task ${call}`)));
  traceIds.push(...concurrent.map((response) => response.traceId));
  await router.intelligence.flush();

  assert.equal(new Set(traceIds).size, 250, "no decision is handed to two calls");
  assert.ok(
    traceIds.every((traceId) => issued.includes(traceId)),
    "every call took a decision of the service",
  );
  assert.ok(sequentialDecides < 10, `150 calls in a row asked in batches: counts ${counts.join(",")}`);
  const reportedIds = reported.map((outcome) => outcome["trace_id"]);
  assert.deepEqual([...reportedIds].sort(), [...traceIds].sort(), "each call's outcome, once, and no other");
});

test("a decision fetched ahead is never used once older than decideAheadMaxAgeMs", async () => {
  const { router, reported, issued, answered } = fakeRouter({ decideAheadMaxAgeMs: 20 }, () => true);
  const aheadArrived = answered(2);
  const first = await router.completion("first");
  await aheadArrived; // the call's own decide, then one fetched ahead for the next call
  assert.deepEqual(issued, [first.traceId, issued[1]]);
  await new Promise((resolve) => setTimeout(resolve, 30)); // the decision kept ahead is now too old
  const second = await router.completion("second");
  assert.equal(second.traceId, issued[2], "the second call asked the service afresh");
  await router.intelligence.flush();
  assert.deepEqual(
    reported.map((outcome) => outcome["trace_id"]),
    [first.traceId, second.traceId],
    "the stale decision is never reported",
  );
});

test("fallbacks skip the paths disabled on the service as last read, and never wait for a read", async () => {
  let reads = 0;
  let answerRead = () => {};
  const readAllowed = new Promise<void>((resolve) => (answerRead = resolve));
  const service: typeof fetch = async (input) => {
    const url = new URL(String(input));
    if (url.pathname.endsWith("/routing/decide")) {
      return Response.json({ trace_id: newTraceId(), model_id: "m-broken", params: {}, reason: "fake", confidence: 1 });
    }
    if (url.pathname.endsWith("/routing/paths") && url.searchParams.get("include_disabled") === "true") {
      reads += 1;
      await readAllowed; // the service is slow to list them
      return Response.json({ paths: [{ model_id: "m-off", params: {}, enabled: false }] });
    }
    return Response.json({ status: "accepted" });
  };
  const provider: typeof fetch = async (_input, init) => {
    const { model } = JSON.parse(String(init?.body)) as { model: string };
    if (model === "m-broken") return new Response("upstream down", { status: 503 });
    const message = { role: "assistant", content: "ok" };
    return Response.json({ id: "x", object: "chat.completion", created: 0, model, choices: [{ index: 0, message }] });
  };
  const intelligence = new RemoteIntelligence({
    url: "http://fake",
    fetch: service,
    resilience: { decideAhead: false },
  });
  const paths = ["m-broken", "m-off", "m-on"].map((model) => ({ model, baseUrl: "http://fake-provider", apiKey: "k" }));
  const router = new Router({ goal: "unit", paths, intelligence, fetch: provider });

  for (let call = 0; call < 2; call++) {
    const response = await router.completion("hi"); // resolves while the read is still on its way
    assert.equal(response.model, "m-off", "nothing known yet: the next path in declared order");
  }
  assert.equal(reads, 1, "one read on its way at a time");
  answerRead();
  const off = [...(await intelligence.disabledPaths("unit"))];
  assert.deepEqual(off, [router.paths[1]!.key]);
  const response = await router.completion("hi");
  assert.deepEqual(
    response.attempts.map((attempt) => attempt.decision.model),
    ["m-broken"],
  );
  assert.equal(response.model, "m-on", "m-off, disabled, is skipped");
  assert.equal(reads, 1, "read again only after refreshIntervalMs");
  await intelligence.close();
});

/** A Router over fakes: a service that decides gpt-4o with fresh trace ids, and a provider that echoes. */
function fakeRouter(
  resilience: Partial<Resilience> = { decideAhead: false },
  successWhen?: (output: string) => boolean,
): FakeRouter {
  const reported: Array<Record<string, unknown>> = [];
  const providerKeys: string[] = [];
  const issued: string[] = [];
  const counts: number[] = [];
  const waiting = new Map<number, () => void>();
  const draw = () => {
    const traceId = (issued.length + 1).toString(16).padStart(32, "0");
    issued.push(traceId);
    return { trace_id: traceId, model_id: "gpt-4o", params: {}, reason: "fake", confidence: 0.5 };
  };
  const service: typeof fetch = async (input, init) => {
    const url = String(input);
    const body = JSON.parse(String(init?.body ?? "{}")) as Record<string, unknown>;
    if (url.endsWith("/routing/decide")) {
      const count = (body["count"] as number | undefined) ?? 1;
      counts.push(count);
      const answer = { ...draw(), more: Array.from({ length: count - 1 }, draw) };
      setTimeout(() => waiting.get(counts.length)?.()); // after the client has read the answer
      return Response.json(answer);
    }
    if (url.endsWith("/report-outcomes")) {
      const outcomes = body["outcomes"] as Array<Record<string, unknown>>;
      reported.push(...outcomes);
      return Response.json({
        results: outcomes.map((outcome) => ({ trace_id: outcome["trace_id"], status: "accepted", status_code: 200 })),
      });
    }
    return Response.json({ status: "accepted" });
  };
  const provider: typeof fetch = async (_input, init) => {
    if (resilience.decideAhead !== false) await new Promise((resolve) => setTimeout(resolve, 1)); // a network's turn
    providerKeys.push((init?.headers as Record<string, string>)["Authorization"]!);
    const body = JSON.parse(String(init?.body)) as { messages: Array<{ content: string }> };
    const message = { role: "assistant", content: body.messages.at(-1)!.content };
    return Response.json({
      id: "x",
      object: "chat.completion",
      created: 0,
      model: "gpt-4o",
      choices: [{ index: 0, message, finish_reason: "stop" }],
    });
  };
  const intelligence = new RemoteIntelligence({ url: "http://fake", fetch: service, resilience });
  const router = new Router({
    goal: "unit",
    paths: [{ model: "gpt-4o", baseUrl: "http://fake-provider", apiKey: "sk-never-in-json" }],
    intelligence,
    fetch: provider,
    ...(successWhen ? { successWhen } : {}),
  });
  const answered = (n: number) => new Promise<void>((resolve) => waiting.set(n, resolve));
  return { router, reported, providerKeys, issued, counts, answered };
}
