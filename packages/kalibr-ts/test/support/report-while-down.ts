/**
 * A short-lived process that reports outcomes while the service is down, then exits: run by the outage test
 * with KALIBR_SPOOL set, so what it could not deliver must wait in the file for the next process.
 */

import { Router } from "@kalibr/sdk";

const count = Number(process.argv[2]);
const router = new Router({ goal: "restart_check", paths: ["gpt-4o"] });
for (let call = 0; call < count; call++) {
  const response = await router.completion("Say hello");
  if (!response.decision.fallback) throw new Error("the service was expected to be down");
  await router.report(true);
}
console.log(`pending ${await router.intelligence.pendingOutcomes()}`);
