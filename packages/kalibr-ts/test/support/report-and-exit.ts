/**
 * A short-lived process that reports outcomes and ends without `flush()` or `close()`: run by the exit test, so
 * the outcomes still waiting for their batch window must leave before the process ends.
 */

import { Router } from "@kalibr/sdk";

const count = Number(process.argv[2]);
const goal = process.argv[3] ?? "exit_check";
const router = new Router({ goal, paths: ["gpt-4o"], successWhen: (output) => output.length > 0 });
for (let call = 0; call < count; call++) await router.completion("Say hello");
