// `hllm serve` for agents and eval harnesses, through the real clients: structured outputs (200
// seeded requests over 10 schemas at temperature 1.0, validated by ajv; 50 under the sanitizers), the openai SDK's parse(),
// the Vercel AI SDK's generateObject / generateText with tools, LangChain's withStructuredOutput and
// bindTools, tool calls streamed and not, logprobs (chat, and completions with echo cross-checked
// against the sampled tokens' own logprobs), n choices with a seed. The demo model has random
// weights, so its unconstrained output is garbage: whatever parses and validates here is the
// grammar's doing. Exit 0: passed, 1: failed, 77: skipped (SDKs not installed).
//
// Environment: as openai_test.mjs (HLLM_RUNNER, HLLM_DEMO_MODEL_DIR, HLLM_SERVE_NODE_MODULES), and
// HLLM_SANITIZED=1 when the runner is built with the sanitizers.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

const SKIP = 77;
const env = (name) => {
  if (!process.env[name]) {
    console.error(`structured test: ${name} is not set`);
    process.exit(1);
  }
  return process.env[name];
};
const RUNNER = env('HLLM_RUNNER');
const DEMO = env('HLLM_DEMO_MODEL_DIR');

let OpenAI, zodResponseFormat, Ajv, ai, createOpenAI, ChatOpenAI, z;
try {
  const require = createRequire(path.resolve(env('HLLM_SERVE_NODE_MODULES'), 'package.json'));
  const openai = require('openai');
  OpenAI = openai.OpenAI ?? openai.default ?? openai;
  ({ zodResponseFormat } = require('openai/helpers/zod'));
  const ajv = require('ajv');
  Ajv = ajv.default ?? ajv;
  ai = require('ai');
  ({ createOpenAI } = require('@ai-sdk/openai'));
  ({ ChatOpenAI } = require('@langchain/openai'));
  ({ z } = require('zod'));
} catch (e) {
  console.error(`structured test: SKIPPED: an npm package is missing (${e.message}); cmake ` +
                'installs tests/serve/package.json into the build folder');
  process.exit(SKIP);
}

const KEY = 'test-key-structured';
const NAME = 'demo';
const server = spawn(RUNNER, ['serve', '-m', DEMO, '--port', '0', '--api-key', KEY,
                              '--served-model-name', NAME, '--max-num-seqs', '16', '-t', '2'],
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
process.on('exit', () => server.kill('SIGKILL'));

let failures = 0;
const check = (cond, what) => {
  if (!cond) {
    failures++;
    console.error(`  FAIL: ${what}`);
  }
  return cond;
};
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
// Runs `tasks` (functions returning promises) `width` at a time.
const pool = async (tasks, width) => {
  const results = new Array(tasks.length);
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]();
    }
  }));
  return results;
};
const ajv = new Ajv({ strict: false });

// ---- the schemas: what OpenAI's strict mode, zod and pydantic produce ---------------------------
const SCHEMAS = {
  flat: { type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer' },
                                        active: { type: 'boolean' } },
          required: ['name', 'age', 'active'], additionalProperties: false },
  nested: { type: 'object', properties: {
    user: { type: 'object', properties: { id: { type: 'integer' }, email: { type: 'string' } },
            required: ['id', 'email'], additionalProperties: false },
    score: { type: 'number' } }, required: ['user', 'score'], additionalProperties: false },
  array: { type: 'object', properties: { tags: { type: 'array', items: { type: 'string' },
                                                 minItems: 1, maxItems: 4 } },
           required: ['tags'], additionalProperties: false },
  enum: { type: 'object', properties: { color: { enum: ['red', 'green', 'blue'] },
                                        size: { type: 'string', enum: ['S', 'M', 'L'] } },
          required: ['color', 'size'], additionalProperties: false },
  anyOf: { type: 'object', properties: { value: { anyOf: [{ type: 'integer' }, { type: 'null' },
                                                          { type: 'string', maxLength: 8 }] } },
           required: ['value'], additionalProperties: false },
  ref: { type: 'object', $defs: { point: { type: 'object', properties: {
    x: { type: 'number' }, y: { type: 'number' } }, required: ['x', 'y'],
    additionalProperties: false } },
         properties: { from: { $ref: '#/$defs/point' }, to: { $ref: '#/$defs/point' } },
         required: ['from', 'to'], additionalProperties: false },
  recursive: { type: 'object', $defs: { node: { type: 'object', properties: {
    label: { type: 'string', maxLength: 6 },
    children: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 2 } },
    required: ['label', 'children'], additionalProperties: false } },
               properties: { root: { $ref: '#/$defs/node' } }, required: ['root'],
               additionalProperties: false },
  optional: { type: 'object', properties: { a: { type: 'string', maxLength: 5 },
                                            b: { type: 'integer' }, c: { type: 'boolean' } },
              required: ['b'], additionalProperties: false },
  constAndNullable: { type: 'object', properties: { kind: { const: 'event' },
                                                    when: { type: ['string', 'null'] } },
                      required: ['kind', 'when'], additionalProperties: false },
  arrayOfObjects: { type: 'object', properties: { items: { type: 'array', maxItems: 3, items: {
    type: 'object', properties: { sku: { type: 'string', minLength: 1, maxLength: 10 },
                                  qty: { type: 'integer' } },
    required: ['sku', 'qty'], additionalProperties: false } } },
                    required: ['items'], additionalProperties: false },
};

try {
  const BASE = await ready;
  const client = new OpenAI({ apiKey: KEY, baseURL: `${BASE}/v1`, maxRetries: 0, timeout: 120000 });
  const messages = [{ role: 'user', content: 'Answer in JSON.' }];

  // 200 requests; 50 under the sanitizers (a runner several times slower, same code paths).
  const seeds = process.env.HLLM_SANITIZED === '1' ? 5 : 20;
  await test(`${seeds * 10} seeded requests over 10 schemas at temperature 1.0 all validate`,
             async () => {
    const tasks = [];
    for (const [name, schema] of Object.entries(SCHEMAS)) {
      const validate = ajv.compile(schema);
      for (let seed = 0; seed < seeds; seed++)
        tasks.push(async () => {
          const r = await client.chat.completions.create({
            model: NAME, messages, temperature: 1.0, seed, max_tokens: 300,
            response_format: { type: 'json_schema', json_schema: { name, schema, strict: true } } });
          const text = r.choices[0].message.content;
          let value;
          try {
            value = JSON.parse(text);
          } catch (e) {
            return check(false, `${name} seed ${seed}: not JSON (finish ${
              r.choices[0].finish_reason}): ${text.slice(0, 200)}`);
          }
          return check(validate(value), `${name} seed ${seed}: ${JSON.stringify(validate.errors)} ${
            text.slice(0, 200)}`);
        });
    }
    const ok = (await pool(tasks, 16)).filter(Boolean).length;
    check(ok === tasks.length, `${ok} of ${tasks.length} valid`);
  });

  await test('json_object: any JSON object, streamed and not', async () => {
    for (let seed = 0; seed < 5; seed++) {
      const r = await client.chat.completions.create({
        model: NAME, messages, temperature: 1.0, seed, max_tokens: 300,
        response_format: { type: 'json_object' } });
      const v = JSON.parse(r.choices[0].message.content);
      check(v !== null && typeof v === 'object' && !Array.isArray(v), `an object: ${
        r.choices[0].message.content.slice(0, 100)}`);
      const stream = await client.chat.completions.create({
        model: NAME, messages, temperature: 1.0, seed, max_tokens: 300, stream: true,
        response_format: { type: 'json_object' } });
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
      check(text === r.choices[0].message.content, 'the stream says the same as the answer');
    }
  });

  await test('the openai SDK: chat.completions.parse() with a zod schema', async () => {
    const Event = z.object({ title: z.string().max(20), day: z.enum(['mon', 'tue', 'wed']),
                             guests: z.array(z.string().max(10)).max(3) });
    for (let seed = 0; seed < 5; seed++) {
      const r = await client.chat.completions.parse({
        model: NAME, messages, temperature: 1.0, seed, max_tokens: 300,
        response_format: zodResponseFormat(Event, 'event') });
      check(Event.safeParse(r.choices[0].message.parsed).success,
            `parsed: ${JSON.stringify(r.choices[0].message.parsed)}`);
    }
  });

  const provider = createOpenAI({ apiKey: KEY, baseURL: `${BASE}/v1` });
  await test('the AI SDK: generateObject', async () => {
    const schema = z.object({ city: z.string().max(12), population: z.number().int(),
                              landmarks: z.array(z.string().max(12)).max(3) });
    const { object } = await ai.generateObject({ model: provider.chat(NAME), schema,
                                                 prompt: 'A city.', temperature: 1.0, seed: 3,
                                                 maxOutputTokens: 300 });
    check(schema.safeParse(object).success, `object: ${JSON.stringify(object)}`);
  });

  const weatherParameters = { type: 'object', properties: {
    city: { type: 'string', maxLength: 16 }, unit: { enum: ['celsius', 'fahrenheit'] } },
                              required: ['city', 'unit'], additionalProperties: false };
  const tools = [
    { type: 'function', function: { name: 'get_weather', description: 'Weather in a city',
                                    parameters: weatherParameters } },
    { type: 'function', function: { name: 'get_time', description: 'Local time',
                                    parameters: { type: 'object', properties: {
                                      zone: { type: 'string', maxLength: 16 } },
                                                  required: ['zone'],
                                                  additionalProperties: false } } },
  ];
  const validateCall = (call) => {
    const tool = tools.find((t) => t.function.name === call.function.name);
    if (!check(tool, `a tool of the request: ${call.function.name}`)) return false;
    const valid = ajv.compile(tool.function.parameters);
    return check(valid(JSON.parse(call.function.arguments)), `arguments of ${
      call.function.name}: ${call.function.arguments} ${JSON.stringify(valid.errors)}`);
  };

  await test('tool_choice required always yields a valid call, then the tool result goes back',
             async () => {
    for (let seed = 0; seed < 20; seed++) {
      const history = [{ role: 'user', content: 'Weather in Paris?' }];
      const r = await client.chat.completions.create({
        model: NAME, messages: history, tools, tool_choice: 'required', temperature: 1.0, seed,
        max_tokens: 300 });
      const choice = r.choices[0];
      check(choice.finish_reason === 'tool_calls', `finish_reason ${choice.finish_reason}`);
      check(choice.message.content === null, 'no content beside the call');
      const call = choice.message.tool_calls?.[0];
      if (!check(call && call.type === 'function' && call.id.startsWith('call_'),
                 `a call: ${JSON.stringify(choice.message)}`))
        continue;
      validateCall(call);
      history.push(choice.message, { role: 'tool', tool_call_id: call.id, content: '21 C' });
      const next = await client.chat.completions.create({
        model: NAME, messages: history, tools, temperature: 0, max_tokens: 5 });
      check(next.choices[0].message.role === 'assistant', 'the tool result is accepted');
    }
  });

  await test('a named function, streamed: the call arrives as deltas', async () => {
    for (let seed = 0; seed < 5; seed++) {
      const stream = await client.chat.completions.create({
        model: NAME, messages: [{ role: 'user', content: 'Time?' }], tools, temperature: 1.0, seed,
        tool_choice: { type: 'function', function: { name: 'get_time' } }, stream: true,
        max_tokens: 300 });
      const call = { id: '', function: { name: '', arguments: '' } };
      let finish = null;
      for await (const chunk of stream) {
        const c = chunk.choices[0];
        if (!c) continue;
        for (const d of c.delta?.tool_calls ?? []) {
          if (d.id) call.id = d.id;
          call.function.name += d.function?.name ?? '';
          call.function.arguments += d.function?.arguments ?? '';
        }
        if (c.finish_reason) finish = c.finish_reason;
      }
      check(finish === 'tool_calls', `finish_reason ${finish}`);
      check(call.function.name === 'get_time', `the named function: ${call.function.name}`);
      validateCall(call);
    }
  });

  await test('the AI SDK: generateText with tools, two steps', async () => {
    const calls = [];
    const result = await ai.generateText({
      model: provider.chat(NAME), prompt: 'Weather in Oslo?', temperature: 1.0, seed: 1,
      toolChoice: 'required', stopWhen: ai.stepCountIs(2), maxOutputTokens: 300,
      tools: { get_weather: ai.tool({
        description: 'Weather in a city',
        inputSchema: z.object({ city: z.string().max(16), unit: z.enum(['celsius', 'fahrenheit']) }),
        execute: async (input) => { calls.push(input); return { temperature: 3 }; } }) } });
    check(result.steps.length === 2, `two steps: ${result.steps.length}`);
    check(calls.length === 2 && calls.every((c) => ['celsius', 'fahrenheit'].includes(c.unit)),
          `the tool ran with valid input each step: ${JSON.stringify(calls)}`);
  });

  await test('/v1/responses: the openai SDK, whole and streamed, with instructions', async () => {
    const r = await client.responses.create({ model: NAME, instructions: 'Be brief.', input: 'Hi',
                                              max_output_tokens: 6, temperature: 0 });
    check(r.object === 'response' && r.id.startsWith('resp_'), `a response: ${r.id}`);
    check(r.status === 'incomplete' && r.incomplete_details?.reason === 'max_output_tokens',
          `cut at max_output_tokens: ${r.status}`);
    check(r.usage.output_tokens === 6 && r.usage.input_tokens > 0, `usage ${JSON.stringify(r.usage)}`);
    const chat = await client.chat.completions.create({
      model: NAME, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }],
      max_tokens: 6, temperature: 0 });
    check(r.output_text === chat.choices[0].message.content,
          `the same text as chat completions: ${r.output_text}`);
    const stream = await client.responses.create({ model: NAME, instructions: 'Be brief.',
                                                   input: 'Hi', max_output_tokens: 6,
                                                   temperature: 0, stream: true });
    let text = '';
    const types = [];
    for await (const e of stream) {
      types.push(e.type);
      if (e.type === 'response.output_text.delta') text += e.delta;
    }
    check(text === r.output_text, `streamed text: ${text}`);
    check(types[0] === 'response.created' && types.at(-1) === 'response.incomplete',
          `events: ${types.join(' ')}`);
  });

  await test('/v1/responses: structured output and a function call round trip', async () => {
    const schema = SCHEMAS.enum;
    const r = await client.responses.create({
      model: NAME, input: [{ role: 'user', content: [{ type: 'input_text', text: 'Pick.' }] }],
      temperature: 1.0, max_output_tokens: 300,
      text: { format: { type: 'json_schema', name: 'pick', schema, strict: true } } });
    check(ajv.compile(schema)(JSON.parse(r.output_text)), `valid: ${r.output_text}`);
    const tools = [{ type: 'function', name: 'get_time', parameters: {
      type: 'object', properties: { zone: { type: 'string', maxLength: 8 } }, required: ['zone'],
      additionalProperties: false }, strict: true }];
    const first = await client.responses.create({ model: NAME, input: 'Time?', tools,
                                                  tool_choice: 'required', temperature: 1.0,
                                                  max_output_tokens: 300 });
    const call = first.output.find((o) => o.type === 'function_call');
    if (!check(call && call.name === 'get_time' && call.call_id.startsWith('call_'),
               `a call: ${JSON.stringify(first.output)}`))
      return;
    check(typeof JSON.parse(call.arguments).zone === 'string', `arguments ${call.arguments}`);
    const second = await client.responses.create({
      model: NAME, tools, max_output_tokens: 4, temperature: 0,
      input: [{ role: 'user', content: 'Time?' }, call,
              { type: 'function_call_output', call_id: call.call_id, output: '12:00' }] });
    check(second.output[0]?.type === 'message', `then text: ${JSON.stringify(second.output)}`);
    // Kept in memory: continued by id (the history comes from the store), fetched, deleted.
    const continued = await client.responses.create({
      model: NAME, tools, max_output_tokens: 4, temperature: 0, previous_response_id: first.id,
      input: [{ type: 'function_call_output', call_id: call.call_id, output: '12:00' }] });
    check(continued.output_text === second.output_text,
          `previous_response_id = the whole history: ${continued.output_text} vs ${second.output_text}`);
    check(continued.usage.input_tokens === second.usage.input_tokens, 'the same prompt');
    const fetched = await client.responses.retrieve(first.id);
    check(fetched.id === first.id && fetched.output[0].call_id === call.call_id, 'retrieved');
    await client.responses.delete(first.id);
    const gone = await fetch(`${BASE}/v1/responses/${first.id}`,
                             { headers: { Authorization: `Bearer ${KEY}` } });
    check(gone.status === 404, `deleted: ${gone.status}`);
  });

  await test('the AI SDK\'s default provider (Responses API): generateText and generateObject',
             async () => {
    const { text } = await ai.generateText({ model: provider(NAME), prompt: 'Hi', temperature: 0,
                                             maxOutputTokens: 5 });
    check(typeof text === 'string' && text.length > 0, `text: ${text}`);
    const schema = z.object({ ok: z.boolean(), n: z.number().int() });
    const { object } = await ai.generateObject({ model: provider(NAME), schema, prompt: 'Go.',
                                                 temperature: 1.0, maxOutputTokens: 300 });
    check(schema.safeParse(object).success, `object: ${JSON.stringify(object)}`);
    const calls = [];
    const result = await ai.generateText({
      model: provider(NAME), prompt: 'Weather in Oslo?', temperature: 1.0, toolChoice: 'required',
      stopWhen: ai.stepCountIs(2), maxOutputTokens: 300,
      tools: { get_weather: ai.tool({
        description: 'Weather in a city',
        inputSchema: z.object({ city: z.string().max(16) }),
        execute: async (input) => { calls.push(input); return { temperature: 3 }; } }) } });
    check(result.steps.length === 2 && calls.length === 2, `two steps, two calls: ${
      JSON.stringify(calls)}`);
  });

  const langchain = new ChatOpenAI({ model: NAME, apiKey: KEY, temperature: 1.0, maxTokens: 300,
                                     configuration: { baseURL: `${BASE}/v1` } });
  await test('LangChain: withStructuredOutput (json schema and function calling)', async () => {
    const Person = z.object({ name: z.string().max(12), age: z.number().int() });
    for (const method of ['jsonSchema', 'functionCalling']) {
      const person = await langchain.withStructuredOutput(Person, { method }).invoke('Someone.');
      check(Person.safeParse(person).success, `${method}: ${JSON.stringify(person)}`);
    }
  });

  await test('LangChain: bindTools, invoked and streamed', async () => {
    const bound = langchain.bindTools(tools, { tool_choice: 'required' });
    const message = await bound.invoke('Weather in Rome?');
    check(message.tool_calls?.length === 1, `one call: ${JSON.stringify(message.tool_calls)}`);
    if (message.tool_calls?.length)
      validateCall({ function: { name: message.tool_calls[0].name,
                                 arguments: JSON.stringify(message.tool_calls[0].args) } });
    let merged;
    for await (const chunk of await bound.stream('Time in Tokyo?'))
      merged = merged === undefined ? chunk : merged.concat(chunk);
    check(merged?.tool_calls?.length === 1, `streamed: ${JSON.stringify(merged?.tool_calls)}`);
    if (merged?.tool_calls?.length)
      validateCall({ function: { name: merged.tool_calls[0].name,
                                 arguments: JSON.stringify(merged.tool_calls[0].args) } });
  });

  await test('chat logprobs: top_logprobs sorted, greedy picks the best', async () => {
    const r = await client.chat.completions.create({
      model: NAME, messages, temperature: 0, max_tokens: 8, logprobs: true, top_logprobs: 3 });
    const content = r.choices[0].logprobs?.content ?? [];
    check(content.length === r.usage.completion_tokens, `one entry per token: ${content.length}`);
    for (const e of content) {
      check(e.top_logprobs.length === 3, 'three alternatives');
      check(e.top_logprobs.every((t, i) => i === 0 || t.logprob <= e.top_logprobs[i - 1].logprob),
            'most likely first');
      check(Math.abs(e.top_logprobs[0].logprob - e.logprob) < 1e-6 &&
            e.top_logprobs[0].token === e.token, `greedy = the most likely: ${JSON.stringify(e)}`);
      check(e.logprob <= 0 && Buffer.from(e.bytes).toString('utf8').length >= 0, 'a logprob');
    }
  });

  await test('completions: echo gives the prompt\'s logprobs, equal to the sampled ones',
             async () => {
    // vLLM's return_tokens_as_token_ids names tokens "token_id:N": exact ids both ways.
    const prompt = [128000, 791, 6864, 315, 9822, 374];
    const first = await client.completions.create({
      model: NAME, prompt, temperature: 1.0, seed: 9, max_tokens: 5, logprobs: 2,
      return_tokens_as_token_ids: true });
    const sampled = first.choices[0].logprobs;
    check(sampled.tokens.length === 5 && sampled.top_logprobs.every((t) => Object.keys(t).length >= 2),
          `five tokens with alternatives: ${JSON.stringify(sampled)}`);
    const generated = sampled.tokens.map((t) => Number(t.slice('token_id:'.length)));
    const again = await client.completions.create({
      model: NAME, prompt: [...prompt, ...generated], max_tokens: 1, temperature: 0, echo: true,
      logprobs: 0, return_tokens_as_token_ids: true });
    const lp = again.choices[0].logprobs;
    check(lp.tokens.length === prompt.length + 5 + 1, `prompt, then the new token: ${lp.tokens.length}`);
    check(lp.token_logprobs[0] === null, 'the first prompt token has no logprob');
    check([...prompt, ...generated].every((id, i) => lp.tokens[i] === `token_id:${id}`),
          `the prompt's tokens: ${lp.tokens}`);
    generated.forEach((_, i) => {
      const x = lp.token_logprobs[prompt.length + i];
      check(Math.abs(x - sampled.token_logprobs[i]) < 1e-4,
            `token ${i}: as a prompt ${x}, as sampled ${sampled.token_logprobs[i]}`);
    });
    const text = await client.completions.create({
      model: NAME, prompt: 'The capital of France is', max_tokens: 2, temperature: 0, echo: true });
    check(text.choices[0].text.startsWith('The capital of France is'), 'echo: the prompt first');
  });

  await test('logit_bias: -100 bans a token, +100 picks one', async () => {
    const first = async (logit_bias) => {
      const r = await client.completions.create({
        model: NAME, prompt: 'Once upon a time', max_tokens: 1, temperature: 0, logprobs: 1,
        return_tokens_as_token_ids: true, logit_bias });
      return r.choices[0].logprobs.tokens[0];
    };
    const greedy = await first(undefined);
    const id = greedy.slice('token_id:'.length);
    const banned = await first({ [id]: -100 });
    check(banned !== greedy, `banned ${greedy}: got ${banned}`);
    check((await first({ 9906: 100 })) === 'token_id:9906', 'a +100 bias wins');
  });

  await test('n = 4 with a seed: four choices, the same again', async () => {
    const ask = () => client.chat.completions.create({
      model: NAME, messages, temperature: 1.0, seed: 42, n: 4, max_tokens: 12 });
    const [a, b] = [await ask(), await ask()];
    check(a.choices.length === 4 && a.choices.every((c, i) => c.index === i), 'four choices');
    check(JSON.stringify(a.choices) === JSON.stringify(b.choices), 'reproducible');
    check(new Set(a.choices.map((c) => c.message.content)).size > 1, 'not four copies');
    check(a.usage.completion_tokens === 48, `usage counts every choice: ${a.usage.completion_tokens}`);
  });

  await test('n = 4 over a long prompt: the choices share its KV blocks (prefix cache)', async () => {
    const hits = async () => Number((await (await fetch(`${BASE}/metrics`)).text())
      .match(/^hllm_prefix_cache_hits_total\{[^}]*\} (\S+)$/m)[1]);
    const before = await hits();
    const prompt = Array.from({ length: 150 }, (_, i) => `word${i}`).join(' ');  // ~300 tokens
    const r = await client.completions.create({ model: NAME, prompt, n: 4, max_tokens: 2, seed: 1 });
    const shared = (await hits()) - before;
    check(shared >= 3 * 256, `three choices found >= 256 prompt tokens each in the cache: ${shared} ` +
                             `of ${4 * r.usage.prompt_tokens}`);
  });
} catch (e) {
  failures++;
  console.error(`FAIL: ${e.stack ?? e}`);
}
server.kill('SIGTERM');
console.log(failures === 0 ? 'structured test: all passed' : `structured test: ${failures} failure(s)`);
process.exit(failures === 0 ? 0 : 1);
