/**
 * What a request can ask its output to be, and the one place each kind becomes a grammar:
 *   json    a JSON schema (null: any JSON object)                         schema.ts
 *   regex   text the whole of which matches a regular expression          regex.ts
 *   choice  exactly one of a list of strings
 *   gbnf    a GBNF grammar (llama.cpp's syntax)                           gbnf.ts
 *   tools   function calls {"name": ..., "arguments": ...}, each under its function's schema,
 *           one or (parallel) several, separated by whitespace
 * `GrammarCache` compiles each spec once over a vocabulary and keeps the most recent ones.
 */
import { GrammarConstraint, type TokenVocabulary } from './constraint.ts';
import { literalsDfa } from './dfa.ts';
import { parseGbnf } from './gbnf.ts';
import { GrammarBuilder, type Grammar, type Sym } from './grammar.ts';
import { compileRegex } from './regex.ts';
import { compileSchema, SchemaCompiler } from './schema.ts';

export interface ToolFunction {
  name: string;
  /** JSON schema of the arguments; absent: no arguments ({}). */
  parameters?: unknown;
}

export type GrammarSpec =
  | { kind: 'json'; schema: unknown | null }
  | { kind: 'regex'; pattern: string }
  | { kind: 'choice'; choices: string[] }
  | { kind: 'gbnf'; text: string }
  | { kind: 'tools'; functions: ToolFunction[]; parallel: boolean };

/** The grammar of a spec. Throws SchemaError, RegexError or GrammarError for what cannot be enforced. */
export function compileSpec(spec: GrammarSpec): Grammar {
  switch (spec.kind) {
    case 'json':
      return compileSchema(spec.schema);
    case 'regex': {
      const b = new GrammarBuilder();
      return b.build(b.add('root', [[GrammarBuilder.t(compileRegex(spec.pattern, { encoding: 'utf8' }))]]));
    }
    case 'choice': {
      const b = new GrammarBuilder();
      const encoder = new TextEncoder();
      return b.build(b.add('root', [[GrammarBuilder.t(literalsDfa(spec.choices.map((c) => encoder.encode(c))))]]));
    }
    case 'gbnf':
      return parseGbnf(spec.text);
    case 'tools':
      return toolCallGrammar(spec.functions, spec.parallel);
  }
}

/**
 * {"name": "<f>", "arguments": <f's parameters>} for any offered f; with `parallel`, one or more
 * such calls separated by whitespace. Each function's schema is its own root ("#" is its root).
 */
function toolCallGrammar(functions: ToolFunction[], parallel: boolean): Grammar {
  const b = new GrammarBuilder();
  const c = new SchemaCompiler(b);
  const r = GrammarBuilder.r;
  const ws = c.ws;
  const calls = functions.map((f, i) => {
    const params = f.parameters ?? { type: 'object', properties: {}, additionalProperties: false };
    const args = c.value(params, `tools[${i}].function.parameters`, `f${i}-`);
    const seq: Sym[] = [c.lit('{'), ws, c.lit('"name"'), ws, c.lit(':'), ws, c.lit(JSON.stringify(f.name)), ws, c.lit(','), ws, c.lit('"arguments"'), ws, c.lit(':'), ws, r(args), ws, c.lit('}')];
    return seq;
  });
  const call = b.add('call', calls);
  let body = call;
  if (parallel) {
    const more = b.fresh('more-calls');
    b.define(more, [[ws, r(call), r(more)], []]);
    body = b.add('calls', [[r(call), r(more)]]);
  }
  return c.finish(b.add('root', [[ws, r(body), ws]]));
}

/**
 * Compiled constraints by spec, so a client that sends the same schema again pays nothing. `get`
 * compiles on the calling thread; `getAsync` on `compiler` (a worker thread), so a server's event
 * loop never waits on a compile; requests for a spec already compiling share it.
 */
export class GrammarCache {
  private readonly entries = new Map<string, GrammarConstraint>();
  private readonly compiling = new Map<string, Promise<GrammarConstraint>>();

  constructor(
    private readonly vocab: () => TokenVocabulary,
    private readonly stopIds: readonly number[],
    private readonly capacity = 16,
    private readonly compiler?: { compile(spec: GrammarSpec): Promise<Grammar> },
  ) {}

  get(spec: GrammarSpec): GrammarConstraint {
    const key = JSON.stringify(spec);
    return this.lookup(key) ?? this.store(key, new GrammarConstraint(compileSpec(spec), this.vocab(), this.stopIds));
  }

  async getAsync(spec: GrammarSpec): Promise<GrammarConstraint> {
    if (!this.compiler) return this.get(spec);
    const key = JSON.stringify(spec);
    const known = this.lookup(key);
    if (known) return known;
    let pending = this.compiling.get(key);
    if (!pending) {
      const vocab = this.vocab(); // built on this thread once (its trie is shared by every grammar)
      pending = this.compiler.compile(spec).then((g) => this.store(key, new GrammarConstraint(g, vocab, this.stopIds)));
      this.compiling.set(key, pending);
      const done = () => this.compiling.delete(key);
      pending.then(done, done);
    }
    return pending;
  }

  private lookup(key: string): GrammarConstraint | undefined {
    const g = this.entries.get(key);
    if (g) {
      this.entries.delete(key); // re-insert: most recently used last
      this.entries.set(key, g);
    }
    return g;
  }

  private store(key: string, g: GrammarConstraint): GrammarConstraint {
    if (this.entries.size >= this.capacity) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, g);
    return g;
  }
}
