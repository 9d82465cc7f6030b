/** The sandbox and a `kalibr serve` for one test file: started before its tests, stopped after them. */

import { after, before } from "node:test";
import { startSandbox, startService, useEnvironment, type Sandbox, type Service } from "./services.js";

export interface Services {
  sandbox: Sandbox;
  /** Replace it after `service.restart()`, so the file's last one is stopped. */
  service: Service;
}

export function withServices(): Services {
  const services = {} as Services;
  before(async () => {
    [services.sandbox, services.service] = await Promise.all([startSandbox(), startService()]);
    useEnvironment(services.sandbox, services.service);
  });
  after(async () => {
    await Promise.all([services.sandbox?.stop(), services.service?.stop()]);
  });
  return services;
}
