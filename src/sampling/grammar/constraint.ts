/**
 * Constrained decoding: from the byte-level matcher (matcher.ts) to the set of token ids allowed
 * at each step, over the real vocabulary.
 *
 * `TokenVocabulary` holds every token's bytes (as the decoder concatenates them: SentencePiece's
 * `▁` is a space, `<0xNN>` is one byte; special tokens have none) in a trie built once per
 * tokenizer. The allowed tokens of a set of matcher states are found by walking the trie with the
 * matcher: a subtree whose prefix no state accepts is skipped whole. The walk also records, for
 * every allowed token, the fewest bytes that complete the output after it.
 *
 * `GrammarConstraint` is one compiled grammar over one vocabulary; it caches the walk's result per
 * set of states (inside a string the state repeats for as long as the string goes on, so most
 * steps are a cache hit). `GrammarMatch` follows one generation.
 *
 * Budget (finishing before max_tokens): with R tokens left, including the one being chosen, a
 * token is allowed only if the output can still be completed after it in R - 2 tokens (one per
 * byte of the shortest completion, at worst: every byte has a one-byte token by byte fallback)
 * plus one for the end-of-turn token. So the output is complete whenever max_tokens is at least
 * the grammar's shortest output + 1; with less, the match goes the shortest way and generation
 * ends at the limit ('length').
 */
import type { Grammar } from './grammar.ts';
import { dedupe, Matcher, stateKey, type MatchState } from './matcher.ts';

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
   * Allowed ids (text tokens and, when the output may end, the end-of-turn ids), or null when
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

export class GrammarConstraint implements ConstraintFactory {
  readonly matcher: Matcher;
  private readonly masks = new Map<string, MaskEntry>();
  private maskBytes = 0;
  private walkCount = 0;

  constructor(
    readonly grammar: Grammar,
    readonly vocab: TokenVocabulary,
    readonly stopIds: readonly number[],
  ) {
    this.matcher = new Matcher(grammar);
  }

  start(): GrammarMatch {
    return new GrammarMatch(this);
  }

  /** How many walks have been made (cache misses), for benchmarks. */
  get walks(): number {
    return this.walkCount;
  }

  /** The allowed tokens from a set of states (cached by state). */
  mask(states: readonly MatchState[]): MaskEntry {
    const key = states.length === 1 ? stateKey(states[0]!) : states.map(stateKey).sort().join('#');
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

  private walk(states: readonly MatchState[]): MaskEntry {
    this.walkCount++;
    const m = this.matcher;
    const ids: number[] = [];
    const dists: number[] = [];
    const visit = (node: TrieNode, from: readonly MatchState[]) => {
      for (let c = 0; c < node.children.length; c++) {
        const b = node.bytes[c]!;
        let next: MatchState[] = [];
        for (const s of from) m.step(s, b, next);
        if (next.length === 0) continue;
        if (next.length > 1) next = dedupe(next);
        const child = node.children[c]!;
        if (child.ids.length) {
          let d = Infinity;
          for (const s of next) d = Math.min(d, m.distance(s));
          for (const id of child.ids) {
            ids.push(id);
            dists.push(d);
          }
        }
        if (child.children.length) visit(child, next);
      }
    };
    visit(this.vocab.root, states);
    const finish = states.some((s) => m.canFinish(s));
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

export class GrammarMatch implements TokenConstraint {
  private states: MatchState[];
  private ended = false;

  constructor(private readonly constraint: GrammarConstraint) {
    this.states = [constraint.matcher.initial];
  }

  /** True when the output may end here (the end-of-turn token may come). */
  get complete(): boolean {
    return this.states.some((s) => this.constraint.matcher.canFinish(s));
  }

  allowed(remaining: number): Uint32Array {
    if (this.ended) return new Uint32Array(0);
    const m = this.constraint.mask(this.states);
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
    if (m.finish) out.push(...this.constraint.stopIds);
    return Uint32Array.from(out);
  }

  /** Takes `token` if the grammar allows it here; returns whether it did (nothing changes if not). */
  tryAccept(token: number): boolean {
    if (this.ended) return false;
    if (this.constraint.stopIds.includes(token)) {
      if (!this.complete) return false;
      this.ended = true;
      return true;
    }
    const bytes = this.constraint.vocab.bytes[token];
    const next = bytes ? this.constraint.matcher.stepBytes(this.states, bytes) : [];
    if (next.length === 0) return false;
    this.states = next;
    return true;
  }

  accept(token: number): void {
    if (this.ended) throw new Error('the grammar constraint already ended');
    if (!this.tryAccept(token)) {
      throw new Error(this.constraint.stopIds.includes(token) ? `end-of-turn token ${token} before the output is complete` : `token ${token} is not allowed by the grammar here`);
    }
  }
}

/**
 * Free text, or an output of `grammar` when the first byte that is not whitespace is `{`: what a
 * tool_choice of "auto" needs. The model decides at its first visible character whether it calls
 * a function; from then on the call is held to the grammar, or the text is free.
 */
export class TextOrGrammar implements ConstraintFactory {
  private textStart: Uint32Array | undefined;

  constructor(readonly constraint: GrammarConstraint) {}

  start(): TokenConstraint {
    return new TextOrGrammarMatch(this.constraint, (this.textStart ??= this.textStartIds()));
  }

  /** Text tokens whose first byte that is not whitespace is not `{` (whitespace-only ones included). */
  private textStartIds(): Uint32Array {
    const ids: number[] = [];
    this.constraint.vocab.bytes.forEach((b, id) => {
      if (!b || b.length === 0) return;
      if (firstVisible(b) !== 0x7b) ids.push(id);
    });
    return Uint32Array.from(ids);
  }
}

function firstVisible(b: Uint8Array): number | undefined {
  return b.find((x) => x !== 0x20 && x !== 0x0a && x !== 0x0d && x !== 0x09);
}

class TextOrGrammarMatch implements TokenConstraint {
  private mode: 'undecided' | 'grammar' | 'text' = 'undecided';
  private readonly match: GrammarMatch;

  constructor(
    private readonly constraint: GrammarConstraint,
    private readonly textStart: Uint32Array,
  ) {
    this.match = constraint.start();
  }

  allowed(remaining: number): Uint32Array | null {
    if (this.mode === 'text') return null;
    const structured = this.match.allowed(remaining);
    if (this.mode === 'grammar') return structured;
    const flags = new Uint8Array(this.constraint.vocab.size);
    for (const id of this.textStart) flags[id] = 1;
    for (const id of structured) flags[id] = 1;
    for (const id of this.constraint.stopIds) flags[id] = 1;
    const out: number[] = [];
    flags.forEach((f, id) => f && out.push(id));
    return Uint32Array.from(out);
  }

  accept(token: number): void {
    if (this.mode === 'text') return;
    if (this.mode === 'grammar') return this.match.accept(token);
    const bytes = this.constraint.vocab.bytes[token];
    const first = bytes ? firstVisible(bytes) : undefined;
    // Leading whitespace the grammar also takes keeps the choice open; `{` commits to a call.
    if (bytes && (first === 0x7b || first === undefined) && this.match.tryAccept(token)) {
      if (first === 0x7b) this.mode = 'grammar';
      return;
    }
    this.mode = 'text';
  }
}
