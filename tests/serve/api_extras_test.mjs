// `hllm serve`'s extras for browsers, agents and dashboards, against real clients:
//   CORS          --allowed-origins, checked with fetch (preflights, headers on every answer) and
//                 with headless Chromium: a page on the allowed origin reads the answers, the same
//                 page on another origin cannot (skipped, not failed, without Chromium)
//   /metrics      vLLM's token counters and latency histograms, parsed with
//                 parse-prometheus-text-format, consistent with the usage of the requests made
//   /tokenize     vLLM's shapes: the ids the completions use (chat: usage.prompt_tokens), and back
// Exit 0: passed, 1: failed, 77: skipped (npm packages not installed).
//
// Environment: HLLM_RUNNER (the hllm binary), HLLM_DEMO_MODEL_DIR, HLLM_SERVE_NODE_MODULES (a
// folder with node_modules/parse-prometheus-text-format, installed by cmake).
import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

const SKIP = 77;
const env = (name) => {
  if (!process.env[name]) {
    console.error(`serve test: ${name} is not set`);
    process.exit(1);
  }
  return process.env[name];
};
const RUNNER = env('HLLM_RUNNER');
const DEMO = env('HLLM_DEMO_MODEL_DIR');

let parsePrometheus;
try {
  const require = createRequire(path.resolve(env('HLLM_SERVE_NODE_MODULES'), 'package.json'));
  const mod = require('parse-prometheus-text-format');
  parsePrometheus = mod.default ?? mod;
} catch (e) {
  console.error('serve test: SKIPPED: the parse-prometheus-text-format npm package is not ' +
                `installed (${e.message}); cmake installs it with npm into the build folder`);
  process.exit(SKIP);
}

const KEY = 'extras-key';
const NAME = 'demo';

// ---- a tiny harness -----------------------------------------------------------------------------
let failures = 0;
const check = (cond, what) => {
  if (!cond) {
    failures++;
    console.error(`  FAIL: ${what}`);
  }
};
const eq = (got, want, what) =>
  check(JSON.stringify(got) === JSON.stringify(want),
        `${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
const test = async (name, fn) => {
  const t0 = Date.now();
  const before = failures;
  try {
    await fn();
  } catch (e) {
    failures++;
    console.error(`  FAIL: threw ${e.stack ?? e}`);
  }
  console.log(`${failures === before ? 'ok  ' : 'FAIL'} ${name} (${Date.now() - t0} ms)`);
};

// ---- two web pages: one on the allowed origin, the same one on another --------------------------
// The page calls hllm with an API key (so the browser sends a preflight first) and writes what it
// could read into <pre id="out">: the model list, a 401 (errors carry CORS headers too) and a
// streamed chat completion.
const page = (base) => `<!doctype html><pre id="out">pending</pre><script>
(async () => {
  const results = {};
  const attempt = async (name, fn) => {
    try { results[name] = await fn(); } catch (e) { results[name] = 'error ' + e.name; }
  };
  const auth = { Authorization: 'Bearer ${KEY}' };
  await attempt('models', async () => {
    const r = await fetch('${base}/v1/models', { headers: auth });
    return r.status + ' ' + (await r.json()).data[0].id;
  });
  await attempt('unauthorized', async () =>
    (await fetch('${base}/v1/models', { headers: { Authorization: 'Bearer wrong' } })).status);
  await attempt('stream', async () => {
    const r = await fetch('${base}/v1/chat/completions', {
      method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 3,
                             ignore_eos: true, stream: true }) });
    return (await r.text()).trimEnd().endsWith('data: [DONE]') ? 'done' : 'incomplete';
  });
  document.getElementById('out').textContent = JSON.stringify(results);
})();
</script>`;
let hllmBase = '';  // the page needs it; the pages are served before hllm starts
const startPageServer = () => new Promise((resolve) => {
  const s = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(page(hllmBase));
  });
  s.listen(0, '127.0.0.1', () => resolve(s));
});
const allowedPage = await startPageServer();
const otherPage = await startPageServer();
const ALLOWED = `http://127.0.0.1:${allowedPage.address().port}`;
const OTHER = `http://127.0.0.1:${otherPage.address().port}`;

// ---- the server ---------------------------------------------------------------------------------
const server = spawn(RUNNER, ['serve', '-m', DEMO, '--port', '0', '--api-key', KEY,
                              '--served-model-name', NAME, '--allowed-origins', ALLOWED, '-t', '2'],
                     { stdio: ['ignore', 'inherit', 'pipe'] });
let serverLog = '';
const ready = new Promise((resolve, reject) => {
  server.stderr.on('data', (d) => {
    serverLog += d;
    process.stderr.write(d);
    const serving = serverLog.match(/hllm: serving .* on (http:\/\/[^/\s]+)\/v1/);
    if (serving) resolve(serving[1]);
  });
  server.on('exit', () => reject(new Error(`hllm serve exited early:\n${serverLog}`)));
  setTimeout(() => reject(new Error(`hllm serve not ready after 60 s:\n${serverLog}`)), 60000);
});
const stopAll = () => {
  server.kill('SIGKILL');
  allowedPage.close();
  otherPage.close();
};
process.on('exit', () => server.kill('SIGKILL'));

const auth = { Authorization: `Bearer ${KEY}` };
const post = (route, body, headers = auth) =>
  fetch(hllmBase + route, { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers },
                            body: JSON.stringify(body) });
const chat = async (body) => {
  const r = await post('/v1/chat/completions', { model: NAME, temperature: 0, ...body });
  eq(r.status, 200, 'chat completion status');
  return r.json();
};
// /metrics parsed: the families by name, and the text. (parse-prometheus-text-format drops the
// _sum and _count lines of histograms with labels; those are read from the text.)
const metrics = async () => {
  const r = await fetch(hllmBase + '/metrics');
  eq(r.status, 200, '/metrics status');
  const text = await r.text();
  const families = Object.fromEntries(parsePrometheus(text).map((f) => [f.name, f]));
  const line = (series) => {
    const found = text.split('\n').find((l) => l.startsWith(`${series}{model_name="${NAME}"} `));
    return found === undefined ? NaN : Number(found.split(' ').at(-1));
  };
  return { ...families, count: (name) => line(`${name}_count`), sum: (name) => line(`${name}_sum`) };
};

// Headless Chromium's DOM after `url` ran its script; null without Chromium.
const CHROMIUM = ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable']
  .find((name) => spawnSync('sh', ['-c', `command -v ${name}`]).status === 0);
const browse = (url) => new Promise((resolve) => {
  const profile = mkdtempSync(path.join(os.tmpdir(), 'hllm-chromium-'));
  const args = ['--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run',
                '--disable-dev-shm-usage', `--user-data-dir=${profile}`,
                '--virtual-time-budget=20000', '--dump-dom', url];
  const p = spawn(CHROMIUM, args, { stdio: ['ignore', 'pipe', 'ignore'] });
  let dom = '';
  p.stdout.on('data', (d) => { dom += d; });
  const timer = setTimeout(() => p.kill('SIGKILL'), 30000);
  p.on('exit', () => {
    clearTimeout(timer);
    rmSync(profile, { recursive: true, force: true });
    const out = dom.match(/<pre id="out">([^<]*)<\/pre>/);
    resolve(out ? out[1].replaceAll('&quot;', '"') : `no result in ${JSON.stringify(dom)}`);
  });
});

// ---- tests --------------------------------------------------------------------------------------
try {
  hllmBase = await ready;

  await test('CORS: preflights, and the headers on every answer to an allowed origin', async () => {
    const preflight = (origin, route = '/v1/chat/completions') =>
      fetch(hllmBase + route, { method: 'OPTIONS', headers: {
        Origin: origin, 'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers': 'authorization,content-type,x-stainless-os' } });
    const ok = await preflight(ALLOWED);
    eq(ok.status, 204, 'preflight from the allowed origin, without the key');
    eq(ok.headers.get('access-control-allow-origin'), ALLOWED, 'Allow-Origin');
    eq(ok.headers.get('access-control-allow-headers'), 'authorization,content-type,x-stainless-os',
       'Allow-Headers echoes the request');
    check(/POST/.test(ok.headers.get('access-control-allow-methods')), 'Allow-Methods has POST');
    check(Number(ok.headers.get('access-control-max-age')) > 0, 'Max-Age');
    check(/Origin/.test(ok.headers.get('vary')), 'Vary: Origin');
    eq((await preflight(ALLOWED, '/anything')).status, 204, 'a preflight to any path');
    const refused = await preflight(OTHER);
    eq(refused.status, 403, 'preflight from another origin');
    eq(refused.headers.get('access-control-allow-origin'), null, 'no Allow-Origin when refused');

    const withOrigin = { Origin: ALLOWED };
    const cases = [
      ['models with the key', await fetch(hllmBase + '/v1/models', { headers: { ...auth, ...withOrigin } }), 200],
      ['401 without the key', await fetch(hllmBase + '/v1/models', { headers: withOrigin }), 401],
      ['404', await fetch(hllmBase + '/v1/nothing', { headers: { ...auth, ...withOrigin } }), 404],
      ['400', await post('/v1/chat/completions', { messages: [] }, { ...auth, ...withOrigin }), 400],
      ['/health', await fetch(hllmBase + '/health', { headers: withOrigin }), 200],
      ['a stream', await post('/v1/chat/completions',
                              { messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, stream: true },
                              { ...auth, ...withOrigin }), 200],
    ];
    for (const [what, r, status] of cases) {
      eq(r.status, status, `${what}: status`);
      eq(r.headers.get('access-control-allow-origin'), ALLOWED, `${what}: Allow-Origin`);
      check(/Origin/.test(r.headers.get('vary') ?? ''), `${what}: Vary: Origin`);
      await r.arrayBuffer();
    }
    const other = await fetch(hllmBase + '/v1/models', { headers: { ...auth, Origin: OTHER } });
    eq([other.status, other.headers.get('access-control-allow-origin')], [200, null],
       'another origin: answered, without CORS headers (the browser hides it)');
    const none = await fetch(hllmBase + '/v1/models', { headers: auth });
    eq(none.headers.get('access-control-allow-origin'), null, 'no Origin: no CORS headers');
    await Promise.all([other.arrayBuffer(), none.arrayBuffer()]);
  });

  await test('CORS from a real browser: the allowed origin reads, another cannot', async () => {
    if (!CHROMIUM) {
      console.log('  SKIPPED: no chromium / google-chrome on PATH');
      return;
    }
    const [allowed, other] = await Promise.all([browse(ALLOWED), browse(OTHER)]);
    eq(allowed, JSON.stringify({ models: `200 ${NAME}`, unauthorized: 401, stream: 'done' }),
       `the page on ${ALLOWED}`);
    eq(other, JSON.stringify({ models: 'error TypeError', unauthorized: 'error TypeError',
                               stream: 'error TypeError' }), `the page on ${OTHER}`);
  });

  await test('/metrics: token counters and latency histograms agree with the usage', async () => {
    const value = (m, name, labels = {}) => Number(m[name].metrics.find((s) =>
      Object.entries(labels).every(([k, v]) => s.labels?.[k] === v)).value);
    const buckets = (m, name) => m[name].metrics[0].buckets;
    const HISTOGRAMS = ['hllm_time_to_first_token_seconds', 'hllm_inter_token_latency_seconds',
                        'hllm_e2e_request_latency_seconds', 'hllm_request_prompt_tokens',
                        'hllm_request_generation_tokens'];
    const before = await metrics();
    const usages = [];
    for (const max_tokens of [1, 4, 9]) {
      const r = await chat({ messages: [{ role: 'user', content: `Count to ${max_tokens}.` }],
                             max_tokens, ignore_eos: true });
      usages.push(r.usage);
    }
    const r = await post('/v1/completions', { prompt: 'Once upon a time', max_tokens: 6,
                                              ignore_eos: true, stream: true,
                                              stream_options: { include_usage: true } });
    const events = (await r.text()).split('\n').filter((l) => l.startsWith('data: {'));
    usages.push(JSON.parse(events.at(-1).slice(6)).usage);
    const after = await metrics();

    const n = usages.length;
    const sum = (key) => usages.reduce((a, u) => a + u[key], 0);
    const delta = (name, labels) => value(after, name, labels) - value(before, name, labels);
    eq(delta('hllm_generation_tokens_total'), sum('completion_tokens'), 'generation tokens');
    eq(delta('hllm_prompt_tokens_total'), sum('prompt_tokens'), 'prompt tokens');
    eq(delta('hllm_request_success_total', { finished_reason: 'length' }), n, 'finished: length');
    eq(delta('hllm_request_success_total', { finished_reason: 'abort' }), 0, 'finished: abort');
    for (const name of ['hllm_prompt_tokens_total', 'hllm_generation_tokens_total',
                        'hllm_request_success_total'])
      eq(after[name].type, 'COUNTER', `${name} type`);
    const count = (m, name) => m.count(name);
    for (const name of HISTOGRAMS) {
      eq(after[name].type, 'HISTOGRAM', `${name} type`);
      const h = buckets(after, name);
      const bounds = Object.keys(h).sort((a, b) => Number(a) - Number(b));
      eq(bounds.at(-1), '+Inf', `${name}: the last bucket is +Inf`);
      const counts = bounds.map((b) => Number(h[b]));
      check(counts.every((c, i) => i === 0 || c >= counts[i - 1]),
            `${name}: buckets are cumulative (${counts})`);
      eq(counts.at(-1), count(after, name), `${name}: +Inf bucket = count`);
    }
    for (const name of ['hllm_e2e_request_latency_seconds', 'hllm_time_to_first_token_seconds',
                        'hllm_request_prompt_tokens', 'hllm_request_generation_tokens'])
      eq(count(after, name) - count(before, name), n, `${name}: one observation per request`);
    eq(count(after, 'hllm_inter_token_latency_seconds') -
       count(before, 'hllm_inter_token_latency_seconds'), sum('completion_tokens') - n,
       'one inter-token latency per token after the first');
    const histSum = (m, name) => m.sum(name);
    eq(histSum(after, 'hllm_request_generation_tokens') -
       histSum(before, 'hllm_request_generation_tokens'), sum('completion_tokens'),
       'request_generation_tokens sum');
    eq(histSum(after, 'hllm_request_prompt_tokens') - histSum(before, 'hllm_request_prompt_tokens'),
       sum('prompt_tokens'), 'request_prompt_tokens sum');
    const e2e = histSum(after, 'hllm_e2e_request_latency_seconds') -
                histSum(before, 'hllm_e2e_request_latency_seconds');
    const ttft = histSum(after, 'hllm_time_to_first_token_seconds') -
                 histSum(before, 'hllm_time_to_first_token_seconds');
    check(e2e > 0 && ttft > 0 && ttft <= e2e, `latency sums: ttft ${ttft} <= e2e ${e2e}`);
    eq(Object.keys(buckets(after, 'hllm_time_to_first_token_seconds')).length, 23,
       "vLLM's 22 time-to-first-token bounds and +Inf");
  });

  await test('/tokenize and /detokenize: the completions\' ids, and back', async () => {
    const tokenize = async (body, route = '/tokenize') => {
      const r = await post(route, body);
      eq(r.status, 200, `${route} ${JSON.stringify(body).slice(0, 60)}`);
      return r.json();
    };
    const text = 'Hello world, how are you?';
    const withBos = await tokenize({ model: NAME, prompt: text, return_token_strs: true });
    const models = await (await fetch(hllmBase + '/v1/models', { headers: auth })).json();
    eq(withBos.count, withBos.tokens.length, 'count');
    eq(withBos.max_model_len, models.data[0].max_model_len, 'max_model_len as /v1/models');
    eq(withBos.token_strs[0], '<|begin_of_text|>', 'BOS first, as /v1/completions encodes');
    eq(withBos.token_strs.length, withBos.count, 'one token string per id');
    check(withBos.token_strs.includes('Ġworld'), `byte-level spellings: ${withBos.token_strs}`);
    const plain = await tokenize({ prompt: text, add_special_tokens: false }, '/v1/tokenize');
    eq(plain.tokens, withBos.tokens.slice(1), 'add_special_tokens: false drops BOS');
    eq('token_strs' in plain, false, 'token_strs only when asked for');
    const back = async (tokens, route = '/detokenize') => (await (await post(route, { tokens })).json()).prompt;
    eq(await back(plain.tokens), text, 'detokenize(tokenize(text)) = text');
    eq(await back(withBos.tokens, '/v1/detokenize'), `<|begin_of_text|>${text}`,
       'special tokens are kept');
    const completion = await (await post('/v1/completions',
                                         { prompt: text, max_tokens: 1 })).json();
    eq(completion.usage.prompt_tokens, withBos.count, 'usage.prompt_tokens of /v1/completions');

    const messages = [{ role: 'system', content: 'Be brief.' },
                      { role: 'user', content: 'What is 2 + 2?' }];
    const asked = await tokenize({ messages });
    const used = await chat({ messages, max_tokens: 1 });
    eq(asked.count, used.usage.prompt_tokens, 'chat: count = usage.prompt_tokens');
    const tools = [{ type: 'function', function: {
      name: 'get_weather', description: 'The weather in a city.',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
    const withTools = await tokenize({ messages, tools });
    check(withTools.count > asked.count, 'tools are part of the prompt');
    eq(withTools.count, (await chat({ messages, tools, max_tokens: 1 })).usage.prompt_tokens,
       'chat with tools: count = usage.prompt_tokens');
    const open = await tokenize({ messages, add_generation_prompt: false });
    check(open.count < asked.count &&
          JSON.stringify(asked.tokens.slice(0, open.count)) === JSON.stringify(open.tokens),
          `add_generation_prompt: false leaves out the assistant header (${open.count} of ${asked.count})`);
    eq(await back(asked.tokens.slice(open.count)),
       '<|start_header_id|>assistant<|end_header_id|>\n\n', 'the header left out');
  });

  await test('/tokenize and /detokenize: bad input, auth', async () => {
    const cases = [
      ['/detokenize', { tokens: [1, 99999999] }, 400, 'tokens'],
      ['/detokenize', { tokens: [-1] }, 400, 'tokens'],
      ['/detokenize', { tokens: ['a'] }, 400, 'tokens'],
      ['/detokenize', { tokens: 5 }, 400, 'tokens'],
      ['/detokenize', {}, 400, 'tokens'],
      ['/tokenize', {}, 400, 'prompt'],
      ['/tokenize', { prompt: 5 }, 400, 'prompt'],
      ['/tokenize', { messages: [{ role: 'wizard', content: 'x' }] }, 400, 'messages[0].role'],
      ['/tokenize', { prompt: 'x', add_special_tokens: 'yes' }, 400, 'add_special_tokens'],
      ['/v1/tokenize', { model: 'gpt-4', prompt: 'x' }, 404, 'model'],
    ];
    for (const [route, body, status, param] of cases) {
      const r = await post(route, body);
      const e = (await r.json()).error;
      eq([r.status, e?.param], [status, param], `${route} ${JSON.stringify(body)}`);
      check(typeof e?.message === 'string' && e.message.length > 0, 'error message');
    }
    const notJson = await fetch(hllmBase + '/tokenize', { method: 'POST', headers: auth, body: '{' });
    eq(notJson.status, 400, 'malformed JSON');
    for (const route of ['/tokenize', '/v1/tokenize', '/detokenize', '/v1/detokenize'])
      eq((await post(route, { prompt: 'x', tokens: [1] }, {})).status, 401, `${route} without a key`);
  });
} catch (e) {
  failures++;
  console.error(`FAIL: ${e.stack ?? e}`);
}
stopAll();
console.log(failures === 0 ? 'serve api extras test: all passed'
                           : `serve api extras test: ${failures} failure(s)`);
process.exit(failures === 0 ? 0 : 1);
