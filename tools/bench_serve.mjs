#!/usr/bin/env node
// Serving benchmark for any OpenAI-compatible server (hllm serve, vLLM, llama.cpp): N streaming
// chat completions at concurrency C; reports output tok/s, time to first token and inter-token
// latency (p50/p99), and errors. Plain fetch, no dependencies (Node >= 18).
//
//   node tools/bench_serve.mjs --base-url http://127.0.0.1:8000/v1 -n 64 -c 16 --max-tokens 128
//
// Each request asks for exactly --max-tokens tokens (ignore_eos, which vLLM and hllm honour) so
// servers are compared on the same work. Token counts come from the usage chunk
// (stream_options.include_usage); a server without it is counted one token per content chunk.
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: {
    'base-url': { type: 'string', default: 'http://127.0.0.1:8000/v1' },
    'api-key': { type: 'string', default: process.env.OPENAI_API_KEY ?? '' },
    model: { type: 'string', default: '' },
    n: { type: 'string', short: 'n', default: '32' },
    concurrency: { type: 'string', short: 'c', default: '8' },
    'max-tokens': { type: 'string', default: '128' },
    'prompt-words': { type: 'string', default: '100' },
    temperature: { type: 'string', default: '0' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (a.help) {
  console.log('usage: bench_serve.mjs [--base-url URL/v1] [--api-key KEY] [--model ID] [-n N] ' +
              '[-c C] [--max-tokens T] [--prompt-words W] [--temperature X] [--json]');
  process.exit(0);
}
const base = a['base-url'].replace(/\/$/, '');
const n = Number(a.n), c = Number(a.concurrency), maxTokens = Number(a['max-tokens']);
const headers = { 'Content-Type': 'application/json',
                  ...(a['api-key'] ? { Authorization: `Bearer ${a['api-key']}` } : {}) };

let model = a.model;
if (!model) {
  const r = await fetch(`${base}/models`, { headers });
  if (!r.ok) throw new Error(`GET ${base}/models: HTTP ${r.status} ${await r.text()}`);
  model = (await r.json()).data[0].id;
}

const WORDS = 'the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing'
  .split(' ');
const prompt = (i) => `Request ${i}: ` +
  Array.from({ length: Number(a['prompt-words']) }, (_, k) => WORDS[(i * 7 + k * 3) % WORDS.length])
    .join(' ');

const quantile = (xs, q) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

// One streamed request: { ttft, gaps[], tokens } in ms, or { error }.
const one = async (i) => {
  const t0 = performance.now();
  try {
    const r = await fetch(`${base}/chat/completions`, {
      method: 'POST', headers,
      body: JSON.stringify({ model, messages: [{ role: 'user', content: prompt(i) }],
                             max_tokens: maxTokens, temperature: Number(a.temperature),
                             ignore_eos: true, stream: true,
                             stream_options: { include_usage: true } }),
    });
    if (!r.ok) return { error: `HTTP ${r.status}: ${(await r.text()).slice(0, 200)}` };
    const decoder = new TextDecoder();
    let buffer = '', ttft = null, last = 0, chunks = 0, tokens = null;
    const gaps = [];
    for await (const bytes of r.body) {
      buffer += decoder.decode(bytes, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
        const j = JSON.parse(event.slice(6));
        if (j.error) return { error: j.error.message };
        if (j.usage) tokens = j.usage.completion_tokens;
        if (!j.choices?.[0]?.delta?.content) continue;
        const now = performance.now();
        if (ttft === null) ttft = now - t0;
        else gaps.push(now - last);
        last = now;
        chunks++;
      }
    }
    return { ttft, gaps, tokens: tokens ?? chunks };
  } catch (e) {
    return { error: String(e.cause?.message ?? e.message) };
  }
};

const results = [];
let next = 0;
const t0 = performance.now();
await Promise.all(Array.from({ length: Math.min(c, n) }, async () => {
  while (next < n) results.push(await one(next++));
}));
const seconds = (performance.now() - t0) / 1000;

const ok = results.filter((r) => !r.error);
const errors = results.filter((r) => r.error);
const tokens = ok.reduce((s, r) => s + r.tokens, 0);
const ttfts = ok.map((r) => r.ttft).filter((x) => x !== null);
const gaps = ok.flatMap((r) => r.gaps);
const report = {
  base_url: base, model, requests: n, concurrency: c, max_tokens: maxTokens,
  errors: errors.length, seconds: +seconds.toFixed(2),
  output_tok_s: +(tokens / seconds).toFixed(1), output_tokens: tokens,
  ttft_ms_p50: +quantile(ttfts, 0.5).toFixed(1), ttft_ms_p99: +quantile(ttfts, 0.99).toFixed(1),
  itl_ms_p50: +quantile(gaps, 0.5).toFixed(2), itl_ms_p99: +quantile(gaps, 0.99).toFixed(2),
};
if (a.json) {
  console.log(JSON.stringify(report));
} else {
  console.log(`${model} at ${base}: ${n} requests, concurrency ${c}, ${maxTokens} tokens each`);
  console.log(`  output   ${report.output_tok_s} tok/s (${tokens} tokens in ${report.seconds} s)`);
  console.log(`  TTFT     p50 ${report.ttft_ms_p50} ms   p99 ${report.ttft_ms_p99} ms`);
  console.log(`  ITL      p50 ${report.itl_ms_p50} ms   p99 ${report.itl_ms_p99} ms`);
  console.log(`  errors   ${errors.length}${errors.length ? ` (first: ${errors[0].error})` : ''}`);
}
process.exit(errors.length === 0 ? 0 : 1);
