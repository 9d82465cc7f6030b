/** The cost of a call, from the core's price table (generated into `contract.generated.ts`, never edited here). */

import { PRICE_TABLE } from "./contract.generated.js";
import type { Path, Price, Usage } from "./types.js";

export { PRICE_TABLE, PRICE_TABLE_VERSION } from "./contract.generated.js";

/** The path's own price, else the table's for its model (a dated snapshot like `gpt-4o-2024-08-06` too). */
export function priceFor(path: Pick<Path, "model" | "price">): Price | undefined {
  if (path.price) return path.price;
  const model = path.model.split("/").pop() ?? path.model;
  let row = PRICE_TABLE[model];
  if (!row) {
    const prefixes = Object.keys(PRICE_TABLE).filter((key) => model.startsWith(`${key}-`));
    const longest = prefixes.sort((a, b) => b.length - a.length)[0];
    row = longest === undefined ? undefined : PRICE_TABLE[longest];
  }
  return row && { inputPerMtok: row[0], outputPerMtok: row[1] };
}

/** USD for a call on `path`, or null when its price is unknown (never a guess). */
export function costOf(path: Pick<Path, "model" | "price">, usage: Usage | undefined): number | null {
  const price = priceFor(path);
  if (!price || !usage) return null;
  return (usage.prompt_tokens * price.inputPerMtok + usage.completion_tokens * price.outputPerMtok) / 1_000_000;
}
