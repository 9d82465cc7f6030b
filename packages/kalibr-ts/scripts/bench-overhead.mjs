// What `router.completion()` costs over calling the same sandbox model with fetch directly, taking turns in
// rounds so a slow spell hits every variant alike. Run by `python -m benchmarks --only ts` (benchmarks/ts_client.py),
// which starts the sandbox and `kalibr serve` and passes them in the environment. Prints JSON: microseconds per call
// (wall p50, p99; the call's own time beyond the provider's round trip; this process's CPU time per call, the
// background work of decide-ahead and outcome delivery included: each round ends by delivering its variant's
// outcomes, inside the round's CPU time) and the requests to the service per call.

import { RemoteIntelligence, Router } from "@kalibr/sdk";

const [rounds, perRound] = [Number(process.argv[2] ?? 20), Number(process.argv[3] ?? 100)];
const base = process.env.OPENAI_BASE_URL;
const messages = [{ role: "user", content: "Repeat after me: benchmark" }];
const paths = ["gpt-4o", { model: "gpt-4o", params: { temperature: 0.5 } }];

async function direct() {
  const response = await fetch(`${base}/chat/completions`, {
    method: "POST",
    headers: { Authorization: "Bearer sandbox", "Content-Type": "application/json" },
    body: JSON.stringify({ model: "gpt-4o", messages }),
  });
  await response.json();
}

// The provider's own round trip inside a routed call (request sent to body read; parsing it counts as the
// router's), through the Router's `fetch` option: what the call takes beyond it is Kalibr's, on the call's path.
let providerUs = 0;
async function timedFetch(input, init) {
  const started = process.hrtime.bigint();
  const response = await fetch(input, init);
  const read = response.text.bind(response); // how the router reads a whole answer
  response.text = async () => {
    const body = await read();
    providerUs = Number(process.hrtime.bigint() - started) / 1000;
    return body;
  };
  return response;
}

// Every request to the service, counted per variant (decides, path registrations, outcome batches).
const serviceRequests = {};
function countingFetch(name) {
  serviceRequests[name] = 0;
  return (input, init) => {
    serviceRequests[name] += 1;
    return fetch(input, init);
  };
}

const intelligences = {};
function routed(name, goal, { judged = true, ...resilience } = {}) {
  const intelligence = new RemoteIntelligence({
    resilience: { decideTimeoutMs: 5000, ...resilience },
    fetch: countingFetch(name),
  });
  intelligences[name] = intelligence;
  const successWhen = judged ? (text) => text.length > 0 : undefined;
  const router = new Router({ goal, paths, intelligence, successWhen, fetch: timedFetch });
  return () => router.completion(messages);
}

const ROUTED = "router.completion";
const UNJUDGED = "router.completion, no successWhen (no report)";
const UNBATCHED = "router.completion, outcomes sent without a batch window (batchDelayMs 0.01)";
const NO_AHEAD = "router.completion, no decide-ahead";
const variants = {
  "direct fetch": direct,
  [ROUTED]: routed(ROUTED, "ts_overhead"),
  [UNJUDGED]: routed(UNJUDGED, "ts_overhead_unjudged", { judged: false }),
  [UNBATCHED]: routed(UNBATCHED, "ts_overhead_unbatched", { batchDelayMs: 0.01 }),
  [NO_AHEAD]: routed(NO_AHEAD, "ts_overhead_no_ahead", { decideAhead: false }),
};
const samples = Object.fromEntries(Object.keys(variants).map((name) => [name, []]));
const inCall = Object.fromEntries(Object.keys(variants).map((name) => [name, []]));
const cpu = Object.fromEntries(Object.keys(variants).map((name) => [name, 0]));
for (const call of Object.values(variants)) for (let i = 0; i < 50; i++) await call(); // warm up
for (const intelligence of Object.values(intelligences)) await intelligence.flush();
for (const name of Object.keys(serviceRequests)) serviceRequests[name] = 0;
for (let round = 0; round < rounds; round++) {
  for (const [name, call] of Object.entries(variants)) {
    const before = process.cpuUsage();
    for (let i = 0; i < perRound; i++) {
      providerUs = 0;
      const started = process.hrtime.bigint();
      await call();
      const wall = Number(process.hrtime.bigint() - started) / 1000;
      samples[name].push(wall);
      inCall[name].push(providerUs ? wall - providerUs : 0);
    }
    await intelligences[name]?.flush(); // the round's outcomes are delivered on its own time
    const used = process.cpuUsage(before);
    cpu[name] += used.user + used.system;
  }
}
const percentile = (values, p) =>
  values.slice().sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(values.length * p))];
const result = Object.fromEntries(
  Object.entries(samples).map(([name, values]) => [
    name,
    {
      p50: percentile(values, 0.5),
      p99: percentile(values, 0.99),
      inCallP50: percentile(inCall[name], 0.5),
      inCallP99: percentile(inCall[name], 0.99),
      calls: values.length,
      cpu: cpu[name] / values.length,
      serviceRequestsPerCall: name in serviceRequests ? serviceRequests[name] / values.length : 0,
    },
  ]),
);
console.log(JSON.stringify(result));
process.exit(0); // outcomes still queued are not part of the measurement
