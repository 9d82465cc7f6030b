/** What happens when the service hangs, goes down and comes back, or the process restarts meanwhile. */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { test } from "node:test";
import { RemoteIntelligence, Router } from "@kalibr/sdk";
import { FileSpool } from "@kalibr/sdk/node";
import { PACKAGE_DIR, countedPerModel } from "./support/services.js";
import { withServices } from "./support/hooks.js";

const services = withServices();

test("a hung service costs the decide timeout once; every later call falls back without the network", async () => {
  const sockets: Socket[] = [];
  const hung = createServer((socket) => void sockets.push(socket)); // accepts, never answers
  await new Promise<void>((listening) => hung.listen(0, "127.0.0.1", listening));
  const port = (hung.address() as { port: number }).port;
  // Requests are counted as the client sends them: Node's HTTP pool may reopen a connection to the hung service
  // after the first call's requests are aborted, and such a connection carries no request.
  let requests = 0;
  const intelligence = new RemoteIntelligence({
    url: `http://127.0.0.1:${port}`,
    apiKey: "unused",
    resilience: { decideTimeoutMs: 50, cooldownMs: 600_000 },
    fetch: (input, init) => {
      requests += 1;
      return fetch(input, init);
    },
  });
  try {
    const router = new Router({ goal: "hung_check", paths: ["gpt-4o", "claude-sonnet-4-20250514"], intelligence });
    const first = await router.completion("Say hello");
    await router.report(true);
    const requestsAfterFirst = requests;
    assert.ok(requestsAfterFirst >= 1, "the first call asked the hung service");
    assert.match(first.decision.reason, /no answer in time/);
    assert.equal(intelligence.breaker.state, "open");
    for (let call = 0; call < 20; call++) {
      const response = await router.completion("Say hello");
      assert.equal(response.model, "gpt-4o");
      assert.equal(response.decision.fallback, true);
      assert.match(response.decision.reason, /circuit breaker open/);
      await router.report(true);
    }
    assert.equal(requests, requestsAfterFirst, "no call after the first sent the hung service a request");
    assert.equal(await intelligence.pendingOutcomes(), 21, "every outcome is kept for later");
  } finally {
    await intelligence.close();
    sockets.forEach((socket) => socket.destroy());
    hung.close();
  }
});

test("outcomes reported while the service is down all arrive once it is back, none twice", async () => {
  const intelligence = new RemoteIntelligence({
    url: services.service.url,
    apiKey: services.service.apiKey,
    resilience: { decideTimeoutMs: 2000, cooldownMs: 100 },
  });
  try {
    const router = new Router({ goal: "outage_check", paths: ["gpt-4o", "claude-sonnet-4-20250514"], intelligence });
    const models: Record<string, number> = {};
    const call = async (success: boolean) => {
      const response = await router.completion("Say hello");
      models[response.model] = (models[response.model] ?? 0) + 1;
      await router.report(success);
      return response;
    };
    for (let count = 0; count < 5; count++) await call(true);
    await intelligence.flush();
    assert.equal(sum(await countedPerModel(services.service, "outage_check")), 5);

    await services.service.stop(); // the operator's outage
    let fellBack = false;
    for (let count = 0; count < 15; count++) {
      const response = await call(count % 3 !== 0);
      // Decisions fetched ahead before the outage may still be taken; once they run out, none reach the service.
      if (response.decision.fallback) fellBack = true;
      else assert.ok(!fellBack, "after a fallback, every call falls back until the service is back");
    }
    assert.ok(fellBack);
    await intelligence.flush(); // refused: nothing listens
    assert.equal(await intelligence.pendingOutcomes(), 15);

    services.service = await services.service.restart();
    await intelligence.flush();
    assert.equal(await intelligence.pendingOutcomes(), 0);
    await intelligence.flush();
    assert.deepEqual(await countedPerModel(services.service, "outage_check"), models, "each call counted once");
  } finally {
    await intelligence.close();
  }
});

test("a path the operator disabled is skipped by every fallback, while the service is up, down, or the breaker open", async () => {
  const goal = "disabled_check";
  const { url, apiKey } = services.service;
  let requests = 0;
  const intelligence = new RemoteIntelligence({
    url,
    apiKey,
    resilience: { decideAhead: false, breakerAfter: 1, cooldownMs: 600_000 },
    refreshIntervalMs: 0, // every read is due: what the client knows is what its last read saw
    fetch: (input, init) => {
      requests += 1;
      return fetch(input, init);
    },
  });
  const router = new Router({ goal, paths: ["claude-sonnet-4-20250514", "gpt-4o", "broken-model"], intelligence });
  try {
    await router.completion("Say hello"); // the service registers the paths
    const headers = { "X-API-Key": apiKey };
    const listed = (await (await fetch(`${url}/api/v1/routing/paths?goal=${goal}`, { headers })).json()) as {
      paths: Array<{ path_id: string; model_id: string }>;
    };
    const claude = listed.paths.find((path) => path.model_id === "claude-sonnet-4-20250514")!.path_id;
    const disable = await fetch(`${url}/api/v1/routing/paths/${claude}`, { method: "DELETE", headers });
    assert.equal(disable.status, 200); // the dashboard's disable action
    await intelligence.disabledPaths(goal); // joins a read the first call may have started before the disable
    assert.deepEqual([...(await intelligence.disabledPaths(goal))], [router.paths[0]!.key]);

    const failed = await router.completion("Say hello", { forceModel: "broken-model" });
    assert.deepEqual(
      failed.attempts.map((attempt) => attempt.decision.model),
      ["broken-model"],
    );
    assert.equal(failed.model, "gpt-4o", "the provider failure's fallback skipped the disabled first path");

    await services.service.stop(); // the outage
    const down = await router.completion("Say hello");
    assert.equal(down.decision.fallback, true);
    assert.equal(down.model, "gpt-4o", "the decide's fallback is the first path not disabled");
    assert.match(down.decision.reason, /using the first path not disabled, "gpt-4o"/);
    assert.equal(intelligence.breaker.state, "open");
    const asked = requests;
    const open = await router.completion("Say hello");
    assert.match(open.decision.reason, /circuit breaker open/);
    assert.equal(open.model, "gpt-4o");
    assert.equal((await router.completion("Say hello", { forceModel: "broken-model" })).model, "gpt-4o");
    assert.equal(requests, asked, "no request while the breaker is open, not even to read the disabled paths");
  } finally {
    await intelligence.close();
    services.service = await services.service.restart();
  }
});

test("outcomes a process could not deliver wait in its file spool for the next process", async () => {
  const spoolFile = join(mkdtempSync(join(tmpdir(), "kalibr-spool-")), "spool.jsonl");
  const { url, apiKey } = services.service;
  await services.service.stop();
  const script = join(PACKAGE_DIR, "build/support/report-while-down.js");
  const environment = { ...process.env, KALIBR_INTELLIGENCE_URL: url, KALIBR_API_KEY: apiKey, KALIBR_SPOOL: spoolFile };
  const { stdout } = await promisify(execFile)(process.execPath, [script, "7"], { env: environment });
  assert.match(stdout, /pending 7/);

  services.service = await services.service.restart();
  const next = new RemoteIntelligence({ url, apiKey, spool: new FileSpool(spoolFile) });
  assert.equal(await next.pendingOutcomes(), 7);
  await next.flush();
  assert.equal(await next.pendingOutcomes(), 0);
  assert.deepEqual(await countedPerModel(services.service, "restart_check"), { "gpt-4o": 7 });
  const again = new RemoteIntelligence({ url, apiKey, spool: new FileSpool(spoolFile) });
  assert.equal(await again.pendingOutcomes(), 0, "delivered outcomes are not sent again");
  await Promise.all([next.close(), again.close()]);
});

test("a process that ends without flush() still delivers the outcomes waiting for their batch window", async () => {
  const script = join(PACKAGE_DIR, "build/support/report-and-exit.js");
  await promisify(execFile)(process.execPath, [script, "3"], { env: process.env });
  assert.deepEqual(await countedPerModel(services.service, "exit_check"), { "gpt-4o": 3 });
});

function sum(counts: Record<string, number>): number {
  return Object.values(counts).reduce((total, count) => total + count, 0);
}
