/**
 * Structured output's CPU cost per request and per token, on the OpenChat 3.5 vocabulary (32002
 * tokens): building the token byte table and trie (once per tokenizer), compiling a spec (once
 * per spec, then cached), and the allowed-token mask per generated token over whole random-logit
 * generations: mean, p99, and the worst first visit of a state (a cold trie walk; later visits
 * are cache hits). The kinds of schema users send, a regex and two grammars. Not a test; figures
 * go in RESULTS.md.
 *
 *   npx tsx bench/structured.ts [--runs 10] [--limit 150]
 */
import { parseArgs } from 'node:util';
import { BUNDLED_MODEL_DIR } from '../src/generator.ts';
import { GrammarConstraint, TokenVocabulary } from '../src/sampling/grammar/constraint.ts';
import { compileSpec, type GrammarSpec } from '../src/sampling/grammar/specs.ts';
import { PERSON_SCHEMA, PYDANTIC_ORDER_SCHEMA, randomLogitsPick } from '../src/sampling/grammar/structured.testing.ts';
import { OpenChatTokenizer } from '../src/tokenizer/index.ts';
import { Rng } from '../src/util/rng.ts';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '10' }, limit: { type: 'string', default: '150' } } });
const runs = Number(values.runs);
const limit = Number(values.limit);

const TREE = {
  $defs: {
    node: {
      type: 'object',
      properties: { label: { type: 'string', maxLength: 16 }, weight: { type: 'number', minimum: 0 }, children: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 4 } },
      required: ['label', 'children'],
      additionalProperties: false,
    },
  },
  $ref: '#/$defs/node',
};
const FLAT40 = {
  type: 'object',
  properties: Object.fromEntries(
    Array.from({ length: 40 }, (_, i) => [`field_${i}`, [{ type: 'string' }, { type: 'integer' }, { type: 'boolean' }, { type: ['number', 'null'] }][i % 4]!]),
  ),
  required: Array.from({ length: 40 }, (_, i) => `field_${i}`).filter((_, i) => i % 3 !== 0),
  additionalProperties: false,
};
const LONG_ENUM = {
  type: 'object',
  properties: { country: { enum: Array.from({ length: 250 }, (_, i) => `Country number ${i} ${String.fromCharCode(65 + (i % 26))}`) } },
  required: ['country'],
  additionalProperties: false,
};
const ARITHMETIC = 'root ::= expr\nexpr ::= term (("+" | "-") term)*\nterm ::= factor (("*" | "/") factor)*\nfactor ::= [0-9]{1,4} | "(" expr ")"';

const SPECS: [string, GrammarSpec][] = [
  ['Pydantic model (formats, pattern, bounds, multipleOf, maxItems)', { kind: 'json', schema: PYDANTIC_ORDER_SCHEMA }],
  ['recursive $ref tree', { kind: 'json', schema: TREE }],
  ['40-property flat object', { kind: 'json', schema: FLAT40 }],
  ['250-value enum', { kind: 'json', schema: LONG_ENUM }],
  ['person (the earlier benchmark\'s schema)', { kind: 'json', schema: PERSON_SCHEMA }],
  ['json_object', { kind: 'json', schema: null }],
  ['regex (an e-mail-like pattern)', { kind: 'regex', pattern: '[a-z0-9._%+-]{1,64}@[a-z0-9-]{1,63}(\\.[a-z0-9-]{1,63}){1,4}' }],
  ['GBNF arithmetic (nested, not regular)', { kind: 'gbnf', text: ARITHMETIC }],
];

const ms = (t0: number) => performance.now() - t0;
const tokenizer = await OpenChatTokenizer.load(BUNDLED_MODEL_DIR);
let t0 = performance.now();
const bytes = tokenizer.tokenBytes();
console.log(`token byte table: ${ms(t0).toFixed(1)} ms`);
t0 = performance.now();
const vocab = new TokenVocabulary(bytes);
console.log(`trie: ${ms(t0).toFixed(1)} ms`);
console.log(`| spec | compile first / again (ms) | grammar rules | mask mean (ms) | p99 (ms) | worst first visit (ms) | steps |`);
console.log(`|---|---:|---:|---:|---:|---:|---:|`);

for (const [name, spec] of SPECS) {
  // First compile (builds the terminals no earlier spec shared), then again (terminals cached, as a
  // server's compiler thread has them after the first request).
  t0 = performance.now();
  compileSpec(spec);
  const first = ms(t0);
  t0 = performance.now();
  const grammar = compileSpec(spec);
  const again = ms(t0);
  const constraint = new GrammarConstraint(grammar, vocab, tokenizer.stopIds);
  const rng = new Rng(7);
  const perToken: number[] = [];
  let worstFirst = 0;
  for (let run = 0; run < runs; run++) {
    const m = constraint.start();
    for (let i = 0; i < limit; i++) {
      const walks = constraint.walks;
      const t = performance.now();
      const allowed = m.allowed(limit - i);
      const dt = ms(t);
      perToken.push(dt);
      if (constraint.walks > walks) worstFirst = Math.max(worstFirst, dt);
      const token = randomLogitsPick(allowed, rng); // the masked distribution of full random logits
      m.accept(token);
      if (tokenizer.stopIds.includes(token)) break;
    }
  }
  perToken.sort((a, b) => a - b);
  const mean = perToken.reduce((a, b) => a + b, 0) / perToken.length;
  const p99 = perToken[Math.floor(0.99 * (perToken.length - 1))]!;
  console.log(`| ${name} | ${first.toFixed(1)} / ${again.toFixed(1)} | ${grammar.size} | ${mean.toFixed(3)} | ${p99.toFixed(2)} | ${worstFirst.toFixed(1)} | ${perToken.length} |`);
}

// The server compiles in a worker thread: how long does the event loop stall meanwhile? (Each spec
// compiled fresh in a new compiler thread, so nothing is cached there.)
{
  const { monitorEventLoopDelay } = await import('node:perf_hooks');
  const { GrammarCompiler } = await import('../src/sampling/grammar/compile_worker.ts');
  const compiler = new GrammarCompiler();
  await compiler.compile({ kind: 'regex', pattern: 'warm' }); // the thread's start (tsx, imports)
  for (const [name, spec] of SPECS.slice(0, 3)) {
    const h = monitorEventLoopDelay({ resolution: 5 });
    h.enable();
    const t = performance.now();
    await compiler.compile(spec);
    const wall = ms(t);
    h.disable();
    console.log(`worker compile, ${name}: ${wall.toFixed(1)} ms; event loop delay max ${(h.max / 1e6).toFixed(1)} ms`);
  }
  compiler.close();
}
