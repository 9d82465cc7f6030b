/// <reference types="node" />
/**
 * `@kalibr/sdk/node`: what only Node (and Bun, Deno's Node layer) can do, kept out of the main entry so edge
 * runtimes never load it.
 *
 * `FileSpool` keeps undelivered outcomes in a file, so they survive a process restart as well as a service
 * outage: `new Router({ ..., intelligence: { spool: new FileSpool('/var/lib/app/kalibr-spool.jsonl') } })`,
 * or set `KALIBR_SPOOL=/path` and every Router on Node uses one. Give each process its own file: the next
 * process to open a file delivers what an earlier one left in it.
 */

import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { OutcomePayload, SpoolStorage } from "./outbox.js";

type Line = { e: string; add: OutcomePayload } | { e: string; done: string[] };

const COMPACT_AFTER = 5_000;

/** An append-only JSON-lines file of outcomes added and settled, compacted when it has grown. */
export class FileSpool implements SpoolStorage {
  private appended = 0;

  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
  }

  load(endpoint: string): OutcomePayload[] {
    const live = this.replay();
    this.rewrite(live);
    return [...(live.get(endpoint)?.values() ?? [])];
  }

  add(endpoint: string, payload: OutcomePayload): void {
    this.append({ e: endpoint, add: payload });
  }

  remove(endpoint: string, traceIds: string[]): void {
    this.append({ e: endpoint, done: traceIds });
    if (this.appended > COMPACT_AFTER) this.rewrite(this.replay());
  }

  private append(line: Line): void {
    appendFileSync(this.path, `${JSON.stringify(line)}\n`);
    this.appended += 1;
  }

  /** What the file holds: per endpoint, the outcomes added and not settled since. */
  private replay(): Map<string, Map<string, OutcomePayload>> {
    const live = new Map<string, Map<string, OutcomePayload>>();
    if (!existsSync(this.path)) return live;
    for (const text of readFileSync(this.path, "utf8").split("\n")) {
      let line: Line;
      try {
        line = JSON.parse(text) as Line;
      } catch {
        continue; // an empty line, or the torn last line of a crash
      }
      const outcomes = live.get(line.e) ?? new Map<string, OutcomePayload>();
      live.set(line.e, outcomes);
      if ("add" in line) outcomes.set(line.add.trace_id, line.add);
      else for (const traceId of line.done) outcomes.delete(traceId);
    }
    return live;
  }

  private rewrite(live: Map<string, Map<string, OutcomePayload>>): void {
    const lines: string[] = [];
    for (const [e, outcomes] of live)
      for (const add of outcomes.values()) lines.push(`${JSON.stringify({ e, add })}\n`);
    const temporary = `${this.path}.${process.pid}.tmp`;
    writeFileSync(temporary, lines.join(""));
    renameSync(temporary, this.path);
    this.appended = 0;
  }
}
