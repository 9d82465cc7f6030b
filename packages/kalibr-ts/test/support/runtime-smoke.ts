/**
 * What a user's server does with the main entry, run under Bun and Deno by the runtimes test: one Router with two
 * paths shared by concurrent handlers, each reporting its own call without a trace id. Prints what each model's
 * outcomes should be, for the test to compare with what the service stored.
 */

import { Router, flush, perContextReports, type CompletionOptions } from "@kalibr/sdk";

const goal = process.env["KALIBR_SMOKE_GOAL"]!;
const router = new Router({ goal, paths: ["gpt-4o", "claude-sonnet-4-20250514"] });
const expected: Record<string, { samples: number; successes: number }> = {};

/** Resolves once `parties` callers are waiting on it: every handler's call is made before any reports. */
function barrier(parties: number): () => Promise<void> {
  let arrived = 0;
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return () => {
    if (++arrived === parties) open();
    return opened;
  };
}

async function handler(success: boolean, allCalled: () => Promise<void>, call: CompletionOptions = {}): Promise<void> {
  let model: string;
  if (call.stream) {
    // The SSE path: chunks read from the runtime's `fetch` body.
    const stream = router.stream("Repeat after me: one two three", call);
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    if (text !== "one two three") throw new Error(`streamed ${JSON.stringify(text)}`);
    model = stream.decision!.model;
  } else {
    model = (await router.completion("Say hello", call)).model;
  }
  const tally = (expected[model] ??= { samples: 0, successes: 0 });
  tally.samples += 1;
  tally.successes += success ? 1 : 0;
  // Without per-context reports both would now report the Router's last call, the second handler's.
  await allCalled();
  await router.report(success);
}

// First the two paths for certain, then as the service decides, one of each pair streamed.
let allCalled = barrier(2);
await Promise.all([
  handler(true, allCalled, { forceModel: "gpt-4o" }),
  handler(false, allCalled, { forceModel: "claude-sonnet-4-20250514" }),
]);
for (let round = 0; round < 2; round++) {
  allCalled = barrier(2);
  await Promise.all([handler(true, allCalled), handler(false, allCalled, { stream: true })]);
}
await flush();
const runtime = "Bun" in globalThis ? "bun" : "Deno" in globalThis ? "deno" : "node";
console.log(JSON.stringify({ runtime, perContextReports, expected }));
