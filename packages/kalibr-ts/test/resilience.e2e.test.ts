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
  const intelligence = new RemoteIntelligence({
    url: `http://127.0.0.1:${port}`,
    apiKey: "unused",
    resilience: { decideTimeoutMs: 50, cooldownMs: 600_000 },
  });
  try {
    const router = new Router({ goal: "hung_check", paths: ["gpt-4o", "claude-sonnet-4-20250514"], intelligence });
    const first = await router.completion("Say hello");
    await router.report(true);
    const connectionsAfterFirst = sockets.length;
    assert.ok(connectionsAfterFirst >= 1);
    assert.match(first.decision.reason, /no answer in time/);
    assert.equal(intelligence.breaker.state, "open");
    for (let call = 0; call < 20; call++) {
      const response = await router.completion("Say hello");
      assert.equal(response.model, "gpt-4o");
      assert.equal(response.decision.fallback, true);
      assert.match(response.decision.reason, /circuit breaker open/);
      await router.report(true);
    }
    assert.equal(sockets.length, connectionsAfterFirst, "no call after the first touched the hung service");
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
    for (let call = 0; call < 5; call++) {
      await router.completion("Say hello");
      await router.report(true);
    }
    await intelligence.flush();
    assert.equal(sum(await countedPerModel(services.service, "outage_check")), 5);

    await services.service.stop(); // the operator's outage
    for (let call = 0; call < 15; call++) {
      const response = await router.completion("Say hello");
      // The first may take the decision fetched ahead before the outage; the others cannot reach the service.
      if (call > 0) assert.equal(response.decision.fallback, true);
      await router.report(call % 3 !== 0);
    }
    await intelligence.flush(); // refused: nothing listens
    assert.equal(await intelligence.pendingOutcomes(), 15);

    services.service = await services.service.restart();
    await intelligence.flush();
    assert.equal(await intelligence.pendingOutcomes(), 0);
    await intelligence.flush();
    const counted = await countedPerModel(services.service, "outage_check");
    assert.equal(sum(counted), 20);
    assert.ok(counted["gpt-4o"]! >= 14, "the outage's fallbacks count for the first path");
  } finally {
    await intelligence.close();
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

function sum(counts: Record<string, number>): number {
  return Object.values(counts).reduce((total, count) => total + count, 0);
}
