/// <reference types="node" />
/**
 * `@kalibr/sdk/node`: what only Node (and Bun, Deno's Node layer) can do, kept out of the main entry so edge
 * runtimes never load it.
 *
 * `FileSpool` keeps undelivered outcomes in a file, so they survive a process restart as well as a service
 * outage: `new Router({ ..., intelligence: { spool: new FileSpool('/var/lib/app/kalibr-spool.jsonl') } })`,
 * or set `KALIBR_SPOOL=/path` and every Router on Node uses one. Give each process its own file: the next
 * process to open a file delivers what an earlier one left in it. Outcomes the service refused for good stay in
 * the file as dead letters, with its status and reason (`intelligence.deadOutcomes()`).
 */

import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { DeadOutcome, OutcomePayload, SpoolStorage } from "./outbox.js";

type Line = { e: string; add: OutcomePayload } | { e: string; done: string[] } | { e: string; dead: DeadOutcome };

/** Per endpoint, what the file holds: outcomes added and not settled since, and dead letters. */
type Contents = Map<string, { live: Map<string, OutcomePayload>; dead: Map<string, DeadOutcome> }>;

const COMPACT_AFTER = 5_000;

/** An append-only JSON-lines file of outcomes added, settled and refused, compacted when it has grown. */
export class FileSpool implements SpoolStorage {
  private appended = 0;

  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
  }

  load(endpoint: string): OutcomePayload[] {
    const contents = this.replay();
    this.rewrite(contents);
    return [...(contents.get(endpoint)?.live.values() ?? [])];
  }

  loadDead(endpoint: string): DeadOutcome[] {
    return [...(this.replay().get(endpoint)?.dead.values() ?? [])];
  }

  add(endpoint: string, payload: OutcomePayload): void {
    this.append({ e: endpoint, add: payload });
  }

  remove(endpoint: string, traceIds: string[]): void {
    this.append({ e: endpoint, done: traceIds });
    if (this.appended > COMPACT_AFTER) this.rewrite(this.replay());
  }

  bury(endpoint: string, dead: DeadOutcome[]): void {
    for (const letter of dead) this.append({ e: endpoint, dead: letter });
  }

  private append(line: Line): void {
    appendFileSync(this.path, `${JSON.stringify(line)}\n`);
    this.appended += 1;
  }

  private replay(): Contents {
    const contents: Contents = new Map();
    if (!existsSync(this.path)) return contents;
    for (const text of readFileSync(this.path, "utf8").split("\n")) {
      let line: Line;
      try {
        line = JSON.parse(text) as Line;
      } catch {
        continue; // an empty line, or the torn last line of a crash
      }
      let held = contents.get(line.e);
      if (held === undefined) contents.set(line.e, (held = { live: new Map(), dead: new Map() }));
      if ("add" in line) held.live.set(line.add.trace_id, line.add);
      else if ("dead" in line) {
        held.live.delete(line.dead.payload.trace_id);
        held.dead.set(line.dead.payload.trace_id, line.dead);
      } else for (const traceId of line.done) held.live.delete(traceId);
    }
    return contents;
  }

  private rewrite(contents: Contents): void {
    const lines: string[] = [];
    for (const [e, { live, dead }] of contents) {
      for (const letter of dead.values()) lines.push(`${JSON.stringify({ e, dead: letter })}\n`);
      for (const add of live.values()) lines.push(`${JSON.stringify({ e, add })}\n`);
    }
    const temporary = `${this.path}.${process.pid}.tmp`;
    writeFileSync(temporary, lines.join(""));
    renameSync(temporary, this.path);
    this.appended = 0;
  }
}
