/** One client per service, shared by every Router of the process (a Router per request stays cheap), and the
 * module functions that read and correct outcomes. */

import { env } from "./env.js";
import {
  type IntelligenceOptions,
  type OutcomeChanges,
  type PolicyAnswer,
  type PolicyConstraints,
  RemoteIntelligence,
} from "./remote.js";
import { checkChanges, checkGoal } from "./paths.js";

const clients = new Map<string, RemoteIntelligence>();

/** The client for these options (default: the environment's service), shared when they carry no own `fetch` or
 * spool. */
export function sharedIntelligence(options: IntelligenceOptions = {}): RemoteIntelligence {
  if (options.fetch || options.spool) return new RemoteIntelligence(options);
  const key = JSON.stringify([
    options.url ?? env("KALIBR_INTELLIGENCE_URL"),
    options.apiKey ?? env("KALIBR_API_KEY"),
    options.tenantId ?? env("KALIBR_TENANT_ID"),
    options.resilience ?? null,
    options.refreshIntervalMs ?? null,
    env("KALIBR_SPOOL"),
  ]);
  let client = clients.get(key);
  if (!client) {
    client = new RemoteIntelligence(options);
    clients.set(key, client);
  }
  return client;
}

export interface ServiceOption {
  /** Which service; default the environment's (`KALIBR_INTELLIGENCE_URL`, `KALIBR_API_KEY`). */
  intelligence?: RemoteIntelligence | IntelligenceOptions;
}

function clientOf(options: ServiceOption | undefined): RemoteIntelligence {
  const given = options?.intelligence;
  return given instanceof RemoteIntelligence ? given : sharedIntelligence(given);
}

/** Change an outcome already reported (a late signal: the user came back unhappy); returns the changed fields. */
export async function updateOutcome(
  traceId: string,
  goal: string,
  changes: OutcomeChanges & ServiceOption,
): Promise<string[]> {
  const { intelligence: _, ...fields } = checkChanges(changes) as OutcomeChanges & ServiceOption;
  return clientOf(changes).updateOutcome(traceId, checkGoal(goal), fields);
}

/** The path to use for `goal` now, how sure the service is, and the alternatives. */
export async function getPolicy(
  goal: string,
  options: { windowHours?: number; constraints?: PolicyConstraints } & ServiceOption = {},
): Promise<PolicyAnswer> {
  return clientOf(options).getPolicy(checkGoal(goal), options);
}

/** What the outcomes say, per goal (schema in the core's docs/insights.md). */
export async function getInsights(
  goal?: string,
  options: { windowHours?: number } & ServiceOption = {},
): Promise<Record<string, unknown>> {
  return clientOf(options).getInsights(goal === undefined ? undefined : checkGoal(goal), options);
}

/** Deliver every outcome kept for the service now (if it answers). Call before a short-lived process ends. */
export function flush(options?: ServiceOption): Promise<void> {
  return clientOf(options).flush();
}
