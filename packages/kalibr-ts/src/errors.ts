/**
 * The errors of the SDK. `UserError` is a `TypeError`: bad input to the SDK, with the fix in its message.
 *
 * ```
 * Error
 * ├── TypeError
 * │   └── UserError                  a usage mistake: the message names the problem and the fix
 * ├── KalibrError
 * │   ├── ProviderError              a model provider failed (failureCategory is what gets reported)
 * │   │   └── RequestRejected        the provider refused the request as the caller's fault (400, 404, 422)
 * │   └── IntelligenceUnavailable    the service did not answer a call whose answer the caller needs
 * └── AggregateError
 *     └── AllPathsFailed             every path failed; `errors` holds each path's ProviderError
 * ```
 *
 * Kalibr being down never raises from `completion()` or `report()`: decisions fall back to the first path and
 * outcomes wait in the outbox.
 */

import type { FailureCategory } from "./types.js";

export class UserError extends TypeError {
  override name = "UserError";
}

export class KalibrError extends Error {
  override name = "KalibrError";
}

export class ProviderError extends KalibrError {
  override name = "ProviderError";
  readonly failureCategory: FailureCategory;
  readonly model: string;
  readonly status: number | undefined;

  constructor(message: string, options: { model: string; failureCategory?: FailureCategory; status?: number }) {
    super(message);
    this.model = options.model;
    this.status = options.status;
    this.failureCategory = options.failureCategory ?? "provider_error";
  }
}

export class RequestRejected extends ProviderError {
  override name = "RequestRejected";
}

export class IntelligenceUnavailable extends KalibrError {
  override name = "IntelligenceUnavailable";
}

export class AllPathsFailed extends AggregateError {
  override name = "AllPathsFailed";
  declare readonly errors: ProviderError[];

  constructor(goal: string, errors: ProviderError[]) {
    const each = errors.map((error) => `${error.model}: ${error.message}`).join("; ");
    super(errors, `every path of goal ${JSON.stringify(goal)} failed: ${each}`);
  }
}
