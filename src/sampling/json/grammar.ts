/**
 * Constrained decoding: from the byte automaton (automaton.ts) to the set of token ids allowed at
 * each step, over the real vocabulary.
 *
 * `TokenVocabulary` holds every token's bytes (as the decoder concatenates them: SentencePiece's
 * `▁` is a space, `<0xNN>` is one byte; special tokens have none) in a trie built once per
 * tokenizer. The allowed tokens of a state are found by walking the trie with the automaton: a
 * subtree whose prefix the automaton rejects is skipped whole. The walk also records, for every
 * allowed token, the automaton's distance to a complete value after it.
 *
 * `JsonGrammar` is one compiled schema over one vocabulary; it caches the walk's result per
 * automaton state (inside a string the state repeats for as long as the string goes on, so most
 * steps are a cache hit). `JsonMatcher` follows one generation.
 *
 * Budget (forcing completion before max_tokens): with R tokens left, including the one being
 * chosen, a token is allowed only if the value can still be completed after it in R - 2 tokens
 * (one per byte of the shortest completion, at worst) plus one for the end-of-turn token. So the
 * output is complete JSON whenever max_tokens >= the schema's shortest value + 1; with a smaller
 * max_tokens the matcher goes the shortest way and generation ends at the limit ('length').
 */
import { canFinish, dedupe, distance, initialState, stateKey, step, stepBytes, type State } from './automaton.ts';
import { anyObjectSchema, compileSchema, type CompiledSchema } from './schema.ts';

/** The vocabulary's token texts are not known byte for byte (not a SentencePiece vocabulary). */
export class UnsupportedVocabularyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnsupportedVocabularyError';
  }
}

/** What the generator asks of a constraint: the allowed ids now, then the id chosen. */
export interface TokenConstraint {
  /**
   * Allowed ids (text tokens and, when the value is complete, the end-of-turn ids), or null when
   * anything goes at this step; `remaining` counts the tokens left, this step's included.
   */
  allowed(remaining: number): Uint32Array | null;
  accept(token: number): void;
}

/** Makes a fresh constraint per generated sequence (one per choice of a request). */
export interface ConstraintFactory {
  start(): TokenConstraint;
}

interface TrieNode {
  /** Tokens whose bytes end here. */
  ids: number[];
  bytes: number[];
  children: TrieNode[];
}

export class TokenVocabulary {
  readonly size: number;
  readonly root: TrieNode = { ids: [], bytes: [], children: [] };

  /** `bytes[id]`: the token's bytes, or null for a token that is never text (special tokens). */
  constructor(readonly bytes: readonly (Uint8Array | null)[]) {
    this.size = bytes.length;
    bytes.forEach((b, id) => {
      if (!b || b.length === 0) return;
      let node = this.root;
      for (const byte of b) {
        let i = node.bytes.indexOf(byte);
        if (i < 0) {
          i = node.bytes.length;
          node.bytes.push(byte);
          node.children.push({ ids: [], bytes: [], children: [] });
        }
        node = node.children[i]!;
      }
      node.ids.push(id);
    });
  }
}

interface MaskEntry {
  /** Allowed text tokens and the distance after each (capped at 65535: far beyond any budget that binds). */
  ids: Uint32Array;
  dists: Uint16Array;
  maxDist: number;
  finish: boolean;
  /** ids plus the end-of-turn ids when `finish`: the answer when the budget does not bind. */
  all: Uint32Array;
}

/**
 * Bytes of masks kept per grammar before its cache is cleared. A mask inside a string allows
 * nearly every token (32002 x 6 bytes = 190 KB); structural states allow a handful.
 */
const MAX_CACHED_MASK_BYTES = 16 << 20;

export class JsonGrammar implements ConstraintFactory {
  private readonly masks = new Map<string, MaskEntry>();
  private maskBytes = 0;

  constructor(
    readonly schema: CompiledSchema,
    readonly vocab: TokenVocabulary,
    readonly stopIds: readonly number[],
  ) {}

  /** `schema` null: any JSON object (response_format json_object). Throws SchemaError. */
  static compile(schema: unknown | null, vocab: TokenVocabulary, stopIds: readonly number[]): JsonGrammar {
    return new JsonGrammar(schema === null ? anyObjectSchema() : compileSchema(schema), vocab, stopIds);
  }

  start(): JsonMatcher {
    return new JsonMatcher(this);
  }

  /** The allowed tokens from a set of states (cached by state). */
  mask(states: readonly State[]): MaskEntry {
    const key = states.map(stateKey).join('#');
    let entry = this.masks.get(key);
    if (!entry) {
      entry = this.walk(states);
      const bytes = entry.ids.byteLength + entry.dists.byteLength + (entry.all === entry.ids ? 0 : entry.all.byteLength);
      if (this.maskBytes + bytes > MAX_CACHED_MASK_BYTES) {
        this.masks.clear();
        this.maskBytes = 0;
      }
      this.masks.set(key, entry);
      this.maskBytes += bytes;
    }
    return entry;
  }

  private walk(states: readonly State[]): MaskEntry {
    const ids: number[] = [];
    const dists: number[] = [];
    const visit = (node: TrieNode, from: readonly State[]) => {
      for (let c = 0; c < node.children.length; c++) {
        const b = node.bytes[c]!;
        const next: State[] = [];
        for (const s of from) step(s, b, next);
        if (next.length === 0) continue;
        const child = node.children[c]!;
        if (child.ids.length) {
          let d = Infinity;
          for (const s of next) d = Math.min(d, distance(s));
          for (const id of child.ids) {
            ids.push(id);
            dists.push(d);
          }
        }
        if (child.children.length) visit(child, next);
      }
    };
    visit(this.vocab.root, states);
    const finish = states.some(canFinish);
    const idArray = Uint32Array.from(ids);
    return {
      ids: idArray,
      dists: Uint16Array.from(dists, (d) => Math.min(d, 65535)),
      maxDist: dists.reduce((a, b) => Math.max(a, b), 0),
      finish,
      all: finish ? Uint32Array.from([...ids, ...this.stopIds]) : idArray,
    };
  }
}

export class JsonMatcher implements TokenConstraint {
  private states: State[];
  private ended = false;

  constructor(private readonly grammar: JsonGrammar) {
    this.states = [initialState(grammar.schema.root)];
  }

  /** True when the root value is complete (the end-of-turn token may come). */
  get complete(): boolean {
    return this.states.some(canFinish);
  }

  allowed(remaining: number): Uint32Array {
    if (this.ended) return new Uint32Array(0);
    const m = this.grammar.mask(this.states);
    const budget = remaining - 2;
    if (m.maxDist <= budget) return m.all;
    const out: number[] = [];
    for (let i = 0; i < m.ids.length; i++) if (m.dists[i]! <= budget) out.push(m.ids[i]!);
    if (out.length === 0 && !m.finish) {
      // Too few tokens left to finish in any case: go the shortest way.
      let best = Infinity;
      for (const d of m.dists) best = Math.min(best, d);
      for (let i = 0; i < m.ids.length; i++) if (m.dists[i] === best) out.push(m.ids[i]!);
    }
    if (m.finish) out.push(...this.grammar.stopIds);
    return Uint32Array.from(out);
  }

  accept(token: number): void {
    if (this.ended) throw new Error('the JSON constraint already ended');
    if (this.grammar.stopIds.includes(token)) {
      if (!this.complete) throw new Error(`end-of-turn token ${token} before the JSON value is complete`);
      this.ended = true;
      return;
    }
    const bytes = this.grammar.vocab.bytes[token];
    const next = bytes ? stepBytes(this.states, bytes) : [];
    if (next.length === 0) throw new Error(`token ${token} is not allowed by the JSON constraint here`);
    this.states = dedupe(next);
  }
}

/** Compiled grammars by schema text, so a client that sends the same schema again pays nothing. */
export class GrammarCache {
  private readonly entries = new Map<string, JsonGrammar>();

  constructor(
    private readonly vocab: () => TokenVocabulary,
    private readonly stopIds: readonly number[],
    private readonly capacity = 16,
  ) {}

  /** `schema` null: any JSON object. Throws SchemaError for what is not supported. */
  get(schema: unknown | null): JsonGrammar {
    const key = schema === null ? '' : JSON.stringify(schema);
    let g = this.entries.get(key);
    if (g) {
      this.entries.delete(key); // re-insert: most recently used last
    } else {
      g = JsonGrammar.compile(schema, this.vocab(), this.stopIds);
      if (this.entries.size >= this.capacity) this.entries.delete(this.entries.keys().next().value!);
    }
    this.entries.set(key, g);
    return g;
  }
}

/**
 * Free text, or a value of `grammar` when the first byte that is not whitespace is `{`: what a
 * tool_choice of "auto" needs. The model decides at its first visible character whether it calls
 * a function; from then on the call is held to the grammar, or the text is free.
 */
export class TextOrJson implements ConstraintFactory {
  private textStart: Uint32Array | undefined;

  constructor(readonly grammar: JsonGrammar) {}

  start(): TokenConstraint {
    return new TextOrJsonMatcher(this.grammar, (this.textStart ??= this.textStartIds()));
  }

  /** Text tokens whose first byte that is not whitespace is not `{` (whitespace-only ones included). */
  private textStartIds(): Uint32Array {
    const ids: number[] = [];
    this.grammar.vocab.bytes.forEach((b, id) => {
      if (!b || b.length === 0) return;
      const first = b.find((x) => x !== 0x20 && x !== 0x0a && x !== 0x0d && x !== 0x09);
      if (first !== 0x7b) ids.push(id);
    });
    return Uint32Array.from(ids);
  }
}

class TextOrJsonMatcher implements TokenConstraint {
  private mode: 'undecided' | 'json' | 'text' = 'undecided';
  private readonly json: JsonMatcher;

  constructor(
    private readonly grammar: JsonGrammar,
    private readonly textStart: Uint32Array,
  ) {
    this.json = grammar.start();
  }

  allowed(remaining: number): Uint32Array | null {
    if (this.mode === 'text') return null;
    const json = this.json.allowed(remaining);
    if (this.mode === 'json') return json;
    const flags = new Uint8Array(this.grammar.vocab.size);
    for (const id of this.textStart) flags[id] = 1;
    for (const id of json) flags[id] = 1;
    for (const id of this.grammar.stopIds) flags[id] = 1;
    const out: number[] = [];
    flags.forEach((f, id) => f && out.push(id));
    return Uint32Array.from(out);
  }

  accept(token: number): void {
    if (this.mode === 'text') return;
    if (this.mode === 'json') return this.json.accept(token);
    const bytes = this.grammar.vocab.bytes[token];
    const first = bytes?.find((x) => x !== 0x20 && x !== 0x0a && x !== 0x0d && x !== 0x09);
    if (bytes && (first === 0x7b || first === undefined)) {
      try {
        this.json.accept(token);
        if (first === 0x7b) this.mode = 'json';
        return;
      } catch {
        // Whitespace beyond what the JSON side allows: the answer is text.
      }
    }
    this.mode = 'text';
  }
}
