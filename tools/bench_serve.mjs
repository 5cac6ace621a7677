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
//
// Multi-turn chat mode (--turns T > 1), like Open WebUI traffic: --conversations N (default -n)
// conversations, at most -c at once, each of T sequential turns. The first user message is a
// document of --history-words words plus a question of --prompt-words words; every later turn
// resends the whole history (each assistant reply as the server streamed it) plus a new user
// message of --prompt-words words. Reports TTFT p50/p99 and mean prompt_tokens per turn index and
// the TTFT p50 ratio last turn / first turn, which shows what prefix caching saves:
//
//   node tools/bench_serve.mjs --base-url http://127.0.0.1:8000/v1 --turns 5 --conversations 16 \
//     -c 8 --history-words 2000 --prompt-words 30 --max-tokens 64
//
// --no-max-tokens sends no max_tokens, as Open WebUI, LangChain and the AI SDK do by default (the
// server may then have to plan for a whole context per request), and instead closes each stream
// after --max-tokens content chunks; tokens are then counted one per chunk.
//
// Words are drawn per conversation from a generator seeded by its index, so conversations share
// no prefix with each other yet every run sends the same user messages; with --temperature 0 the
// replies, and so the whole requests, match between two servers that compute the same tokens.
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
    turns: { type: 'string', default: '1' },
    conversations: { type: 'string' },
    'history-words': { type: 'string', default: '0' },
    'no-max-tokens': { type: 'boolean', default: false },
    temperature: { type: 'string', default: '0' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (a.help) {
  console.log('usage: bench_serve.mjs [--base-url URL/v1] [--api-key KEY] [--model ID] [-n N] ' +
              '[-c C] [--max-tokens T] [--no-max-tokens] [--prompt-words W] [--temperature X] ' +
              '[--json]\n' +
              '       [--turns T --conversations N --history-words W]  (multi-turn chat mode)');
  process.exit(0);
}
const base = a['base-url'].replace(/\/$/, '');
const n = Number(a.n), c = Number(a.concurrency), maxTokens = Number(a['max-tokens']);
const turns = Number(a.turns), conversations = Number(a.conversations ?? a.n);
const promptWords = Number(a['prompt-words']), historyWords = Number(a['history-words']);
if (!(Number.isInteger(turns) && turns >= 1)) throw new Error(`--turns ${a.turns}: want 1 or more`);
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
  Array.from({ length: promptWords }, (_, k) => WORDS[(i * 7 + k * 3) % WORDS.length]).join(' ');

// Multi-turn vocabulary: random draws from it give each conversation its own text.
const VOCAB = ('river mountain silver lantern garden window market engine harbor winter summer ' +
  'copper violet forest meadow signal thunder pocket ladder candle mirror castle island rocket ' +
  'orchard bridge planet velvet anchor basket cactus dragon falcon glacier hammer jungle kettle ' +
  'lemon magnet needle oyster pepper quartz saddle tunnel umbrella valley walnut yellow zebra ' +
  'shadow marble canyon feather blanket compass crystal desert ember fossil granite horizon ' +
  'ivory jasmine kingdom lagoon meteor nectar obsidian pebble quiver ribbon spiral timber ' +
  'voyage whistle almond beacon cobalt drizzle echo fjord goblet hollow igloo juniper').split(' ');

// mulberry32: a tiny seeded PRNG, so a conversation's words are the same on every run.
const rng = (seed) => () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const words = (next, count) =>
  Array.from({ length: count }, () => VOCAB[Math.floor(next() * VOCAB.length)]).join(' ');

const quantile = (xs, q) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const mean = (xs) => xs.length ? xs.reduce((s, x) => s + x, 0) / xs.length : NaN;

// One streamed request: { ttft, gaps[], tokens, promptTokens, text } (times in ms), or { error }.
const cutAtMaxTokens = a['no-max-tokens'];
const one = async (messages) => {
  const t0 = performance.now();
  const controller = new AbortController();
  try {
    const r = await fetch(`${base}/chat/completions`, {
      method: 'POST', headers, signal: controller.signal,
      body: JSON.stringify({ model, messages,
                             ...(cutAtMaxTokens ? {} : { max_tokens: maxTokens }),
                             temperature: Number(a.temperature),
                             ignore_eos: true, stream: true,
                             stream_options: { include_usage: true } }),
    });
    if (!r.ok) return { error: `HTTP ${r.status}: ${(await r.text()).slice(0, 200)}` };
    const decoder = new TextDecoder();
    let buffer = '', ttft = null, last = 0, chunks = 0, tokens = null, promptTokens = null;
    let text = '';
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
        if (j.usage) ({ completion_tokens: tokens, prompt_tokens: promptTokens } = j.usage);
        const content = j.choices?.[0]?.delta?.content;
        if (!content) continue;
        const now = performance.now();
        if (ttft === null) ttft = now - t0;
        else gaps.push(now - last);
        last = now;
        chunks++;
        text += content;
        if (cutAtMaxTokens && chunks >= maxTokens) break;
      }
      if (cutAtMaxTokens && chunks >= maxTokens) break;
    }
    // The client has what it wanted and hangs up: the server must notice and stop.
    if (cutAtMaxTokens && chunks >= maxTokens) controller.abort();
    return { ttft, gaps, tokens: tokens ?? chunks, promptTokens, text };
  } catch (e) {
    return { error: String(e.cause?.message ?? e.message) };
  }
};

// Runs task(0..count-1) with at most c in flight.
const pool = async (count, task) => {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(c, count) }, async () => {
    while (next < count) await task(next++);
  }));
};

// One conversation of `turns` turns; pushes each turn's result, tagged with its turn index, into
// `out`. An error ends the conversation: later turns would need the reply it did not get.
const conversation = async (i, out) => {
  const next = rng(i + 1);
  const messages = [{ role: 'user', content: (historyWords ? `Document ${i}: ` +
    `${words(next, historyWords)}\n\n` : '') + `Question ${i}.0: ${words(next, promptWords)}` }];
  for (let turn = 0; turn < turns; turn++) {
    if (turn > 0) {
      messages.push({ role: 'user', content: `Question ${i}.${turn}: ${words(next, promptWords)}` });
    }
    const r = await one(messages);
    out.push({ ...r, turn });
    if (r.error) return;
    messages.push({ role: 'assistant', content: r.text });
  }
};

const results = [];
const t0 = performance.now();
if (turns > 1) await pool(conversations, (i) => conversation(i, results));
else await pool(n, async (i) => results.push(await one([{ role: 'user', content: prompt(i) }])));
const seconds = (performance.now() - t0) / 1000;

const ok = results.filter((r) => !r.error);
const errors = results.filter((r) => r.error);
const tokens = ok.reduce((s, r) => s + r.tokens, 0);
const ttftsOf = (rs) => rs.map((r) => r.ttft).filter((x) => x !== null);
const ttfts = ttftsOf(ok);
const gaps = ok.flatMap((r) => r.gaps);
const report = {
  base_url: base, model, requests: results.length, concurrency: c, max_tokens: maxTokens,
  errors: errors.length, seconds: +seconds.toFixed(2),
  output_tok_s: +(tokens / seconds).toFixed(1), output_tokens: tokens,
  ttft_ms_p50: +quantile(ttfts, 0.5).toFixed(1), ttft_ms_p99: +quantile(ttfts, 0.99).toFixed(1),
  itl_ms_p50: +quantile(gaps, 0.5).toFixed(2), itl_ms_p99: +quantile(gaps, 0.99).toFixed(2),
};
if (turns > 1) {
  // Per turn index, arrays of length `turns` (ok: successful requests); null where none succeeded.
  const byTurn = Array.from({ length: turns }, (_, t) => ok.filter((r) => r.turn === t));
  const num = (x, digits) => Number.isNaN(x) ? null : +x.toFixed(digits);
  Object.assign(report, {
    conversations, turns, history_words: historyWords, prompt_words: promptWords,
    by_turn: {
      ok: byTurn.map((rs) => rs.length),
      ttft_ms_p50: byTurn.map((rs) => num(quantile(ttftsOf(rs), 0.5), 1)),
      ttft_ms_p99: byTurn.map((rs) => num(quantile(ttftsOf(rs), 0.99), 1)),
      prompt_tokens_mean: byTurn.map((rs) =>
        num(mean(rs.map((r) => r.promptTokens).filter((x) => x !== null)), 1)),
    },
  });
  const p50 = report.by_turn.ttft_ms_p50;
  report.ttft_p50_last_over_first = p50[0] && p50[turns - 1] !== null ?
    +(p50[turns - 1] / p50[0]).toFixed(3) : null;
}

const printMultiTurn = () => {
  const t = report.by_turn;
  console.log(`${model} at ${base}: ${conversations} conversations x ${turns} turns, ` +
              `concurrency ${c}, ${historyWords}-word document, ${promptWords}-word messages, ` +
              `${maxTokens} tokens each`);
  console.log('  turn   ok  prompt_tokens  TTFT p50 ms  TTFT p99 ms');
  for (let i = 0; i < turns; i++) {
    console.log(`  ${String(i + 1).padStart(4)}  ${String(t.ok[i]).padStart(3)}  ` +
                `${String(t.prompt_tokens_mean[i] ?? '-').padStart(13)}  ` +
                `${String(t.ttft_ms_p50[i] ?? '-').padStart(11)}  ` +
                `${String(t.ttft_ms_p99[i] ?? '-').padStart(11)}`);
  }
  console.log(`  TTFT p50 last/first turn  ${report.ttft_p50_last_over_first ?? '-'}`);
};
if (a.json) {
  console.log(JSON.stringify(report));
} else {
  if (turns > 1) printMultiTurn();
  else console.log(`${model} at ${base}: ${n} requests, concurrency ${c}, ${maxTokens} tokens each`);
  console.log(`  output   ${report.output_tok_s} tok/s (${tokens} tokens in ${report.seconds} s)`);
  console.log(`  TTFT     p50 ${report.ttft_ms_p50} ms   p99 ${report.ttft_ms_p99} ms`);
  console.log(`  ITL      p50 ${report.itl_ms_p50} ms   p99 ${report.itl_ms_p99} ms`);
  console.log(`  errors   ${errors.length}${errors.length ? ` (first: ${errors[0].error})` : ''}`);
}
process.exit(errors.length === 0 ? 0 : 1);
