/**
 * JSON mode's CPU cost per request and per token, on the OpenChat 3.5 vocabulary (32002 tokens):
 * building the token byte table and trie (once per tokenizer), compiling a schema (once per
 * schema, then cached), and the allowed-token mask per generated token, cold (a trie walk) and
 * over whole random-logit generations (mostly cache hits). Not a test; figures go in RESULTS.md.
 *
 *   npx tsx bench/json.ts
 */
import { OpenChatTokenizer } from '../src/tokenizer/index.ts';
import { JsonGrammar, TokenVocabulary } from '../src/sampling/json/grammar.ts';
import { PERSON_SCHEMA } from '../src/sampling/json/schema.testing.ts';
import { DEFAULT_SAMPLING } from '../src/sampling/params.ts';
import { Sampler } from '../src/sampling/sampler.ts';
import { Rng } from '../src/util/rng.ts';
import { BUNDLED_MODEL_DIR } from '../src/generator.ts';

const ms = (t0: number) => (performance.now() - t0).toFixed(1);
const tokenizer = await OpenChatTokenizer.load(BUNDLED_MODEL_DIR);
let t0 = performance.now();
const bytes = tokenizer.tokenBytes();
console.log(`token byte table: ${ms(t0)} ms`);
t0 = performance.now();
const vocab = new TokenVocabulary(bytes);
console.log(`trie: ${ms(t0)} ms`);

for (const [name, schema] of [['person schema', PERSON_SCHEMA], ['json_object', null]] as const) {
  t0 = performance.now();
  const grammar = JsonGrammar.compile(schema, vocab, tokenizer.stopIds);
  console.log(`${name}: compile ${ms(t0)} ms`);
  const rng = new Rng(7);
  const perToken: number[] = [];
  let cold = 0;
  for (let run = 0; run < 10; run++) {
    const m = grammar.start();
    const sampler = new Sampler({ ...DEFAULT_SAMPLING }, 32002, run);
    const generated: number[] = [];
    const limit = 150;
    for (let i = 0; i < limit; i++) {
      const t = performance.now();
      const allowed = m.allowed(limit - i);
      const dt = performance.now() - t;
      perToken.push(dt);
      if (run === 0 && i === 0) cold = dt;
      const logits = new Float32Array(32002).map(() => 4 * rng.normal());
      const token = sampler.sample(logits, { prompt: [], generated }, allowed);
      m.accept(token);
      if (tokenizer.stopIds.includes(token)) break;
      generated.push(token);
    }
  }
  perToken.sort((a, b) => a - b);
  const mean = perToken.reduce((a, b) => a + b, 0) / perToken.length;
  const q = (p: number) => perToken[Math.floor(p * (perToken.length - 1))]!.toFixed(3);
  console.log(
    `${name}: mask per token over ${perToken.length} steps (10 random-logit generations): mean ${mean.toFixed(3)} ms, ` +
      `median ${q(0.5)}, p90 ${q(0.9)}, max ${q(1)} ms; first (cold walk from the start state) ${cold.toFixed(2)} ms`,
  );
}
