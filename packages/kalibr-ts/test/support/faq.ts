/**
 * The FAQ's TypeScript snippets, read from the shared brief at test time and written out as modules that run
 * as printed. Only what surrounds a snippet is added: the names the FAQ leaves to the reader (`messages`,
 * `app`, `validateSchema`, `issueResolved`, `[...]` path lists), the import where a snippet assumes it, and an
 * export of the snippet's variables so the test can look at them.
 */

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { PACKAGE_DIR, SHARED_DIR } from "./services.js";

const FAQ_FILE = join(SHARED_DIR, "brief", "faq-examples.md");
const PATH_LIST = "['gpt-4o', 'claude-sonnet-4-20250514']";
const SCOPE_NAMES = ["router", "response", "response1", "response2", "model", "result", "isValid"];

/** Every `typescript name=...` block of the FAQ, by name. */
export function faqSnippets(): Map<string, string> {
  let text: string;
  try {
    text = readFileSync(FAQ_FILE, "utf8");
  } catch {
    throw new Error(`the FAQ examples are not at ${FAQ_FILE}: put shared/ beside the clone or set KALIBR_SHARED_DIR`);
  }
  const snippets = new Map<string, string>();
  for (const match of text.matchAll(/```typescript name=([\w-]+)\n([\s\S]*?)```/g)) snippets.set(match[1]!, match[2]!);
  return snippets;
}

/** The words the test supplies, as a module prelude; `app` is the test's, reached through a global. */
const PRELUDE = `
const messages = [{ role: 'user', content: 'Repeat after me: {"summary": "Kalibr routes each call to the path that works"}' }];
const validateSchema = (value) => typeof value === 'object' && value !== null && typeof value.summary === 'string';
const issueResolved = true;
const app = globalThis.kalibrFaqApp;
`;

let written = 0;

/** Run the snippets `names`, in order, as one module; resolves to the variables they declared. */
export async function runSnippets(...names: string[]): Promise<Record<string, any>> {
  const snippets = faqSnippets();
  const body = names
    .map((name) => {
      const snippet = snippets.get(name);
      if (snippet === undefined) throw new Error(`the FAQ has no TypeScript snippet ${JSON.stringify(name)}`);
      return snippet.replaceAll("[...]", PATH_LIST);
    })
    .join("\n");
  const importLine = body.includes("from '@kalibr/sdk'") ? "" : "import { Router } from '@kalibr/sdk';\n";
  const exported = SCOPE_NAMES.map((name) => `${name}: typeof ${name} === 'undefined' ? undefined : ${name}`).join(
    ", ",
  );
  const module = `${importLine}${PRELUDE}\n${body}\nexport const scope = { ${exported} };\n`;
  const directory = join(PACKAGE_DIR, "build", "faq");
  mkdirSync(directory, { recursive: true });
  const file = join(directory, `${names.join("+")}-${++written}.mjs`);
  writeFileSync(file, module);
  const loaded = (await import(pathToFileURL(file).href)) as { scope: Record<string, any> };
  return loaded.scope;
}
