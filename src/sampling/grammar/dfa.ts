/**
 * Deterministic finite automata over bytes: the terminals of every grammar (grammar.ts).
 *
 * A `Dfa` is immutable. State 0 is the start. Each state has a sorted list of disjoint byte ranges
 * [lo, hi] with a target state, stored flat: the ranges of state s are indices
 * offsets[s] .. offsets[s+1]-1 of `lo`, `hi`, `to`. Every state can reach acceptance (dead states
 * are pruned when built), so a byte that has a transition never leads into a dead end, and
 * `dist[s]` (the fewest bytes from s to an accepting state) is always finite.
 *
 * Built with `DfaBuilder` (states and edges, then `build()`), or combined: `intersect` (both
 * languages); there is no concatenation: grammars sequence terminals instead.
 */

export class Dfa {
  /** Unique per automaton: identifies it in matcher state keys. */
  readonly id: number;
  private static nextId = 0;

  constructor(
    readonly offsets: Uint32Array,
    readonly lo: Uint8Array,
    readonly hi: Uint8Array,
    readonly to: Int32Array,
    readonly accepting: Uint8Array,
    readonly dist: Uint32Array,
  ) {
    this.id = Dfa.nextId++;
  }

  get stateCount(): number {
    return this.accepting.length;
  }

  /** The state after byte `b` from state `s`, or -1 when `b` is not allowed. */
  next(s: number, b: number): number {
    const end = this.offsets[s + 1]!;
    if (end - this.offsets[s]! > 4) return this.table(s)[b]!;
    for (let i = this.offsets[s]!; i < end; i++) {
      if (b < this.lo[i]!) return -1;
      if (b <= this.hi[i]!) return this.to[i]!;
    }
    return -1;
  }

  /**
   * A 256-entry next-state table for a state with many ranges (inside a string, the state the
   * vocabulary walk steps most), made when first needed: 1 KB per such state.
   */
  private table(s: number): Int32Array {
    let t = this.tables.get(s);
    if (!t) {
      t = new Int32Array(256).fill(-1);
      for (let i = this.offsets[s]!; i < this.offsets[s + 1]!; i++) t.fill(this.to[i]!, this.lo[i]!, this.hi[i]! + 1);
      this.tables.set(s, t);
    }
    return t;
  }

  private readonly tables = new Map<number, Int32Array>();

  /** Whether the whole of `bytes` is in the language. */
  matches(bytes: Uint8Array): boolean {
    let s = 0;
    for (const b of bytes) {
      s = this.next(s, b);
      if (s < 0) return false;
    }
    return this.accepting[s] === 1;
  }

  /** The set of first bytes of the language, as a 256-entry flag array. */
  firstBytes(): Uint8Array {
    const f = new Uint8Array(256);
    for (let i = this.offsets[0]!; i < this.offsets[1]!; i++) f.fill(1, this.lo[i]!, this.hi[i]! + 1);
    return f;
  }

  /** True when the language is exactly the empty string. */
  get onlyEmpty(): boolean {
    return this.offsets[1] === 0;
  }
}

/** The language is empty (no string can ever be accepted): nothing to build. */
export class EmptyLanguageError extends Error {
  constructor(message = 'the automaton accepts no string') {
    super(message);
    this.name = 'EmptyLanguageError';
  }
}

/** An automaton grew past `maxStates`: the pattern or bounds are too large to enforce. */
export class TooManyStatesError extends Error {
  constructor(readonly limit: number) {
    super(`the automaton needs more than ${limit} states`);
    this.name = 'TooManyStatesError';
  }
}

/** The most states one terminal may have (a few MB at worst); beyond it a request is refused. */
export const MAX_DFA_STATES = 50_000;

export class DfaBuilder {
  private readonly acc: boolean[] = [];
  private readonly edges: [number, number, number][][] = [];

  /** A new state; the first one made is the start. */
  state(accepting = false): number {
    if (this.acc.length >= MAX_DFA_STATES) throw new TooManyStatesError(MAX_DFA_STATES);
    this.acc.push(accepting);
    this.edges.push([]);
    return this.acc.length - 1;
  }

  setAccepting(s: number, accepting = true): void {
    this.acc[s] = accepting;
  }

  /** Bytes lo..hi (inclusive) lead from `from` to `to`. Ranges of one state must not overlap. */
  edge(from: number, lo: number, hi: number, to: number): void {
    if (lo > hi) return;
    this.edges[from]!.push([lo, hi, to]);
  }

  get size(): number {
    return this.acc.length;
  }

  /**
   * The automaton, without the states that cannot be reached from the start or cannot reach
   * acceptance; adjacent ranges with one target are merged. Throws EmptyLanguageError when the
   * start cannot reach acceptance, and Error when two ranges of a state overlap.
   */
  build(): Dfa {
    const n = this.acc.length;
    if (n === 0) throw new EmptyLanguageError();
    // Distances to acceptance on reversed edges (BFS; every edge costs one byte).
    const rev: number[][] = Array.from({ length: n }, () => []);
    this.edges.forEach((es, s) => es.forEach(([, , t]) => rev[t]!.push(s)));
    const dist = new Array<number>(n).fill(Infinity);
    const queue: number[] = [];
    this.acc.forEach((a, s) => {
      if (a) {
        dist[s] = 0;
        queue.push(s);
      }
    });
    for (let q = 0; q < queue.length; q++) {
      const s = queue[q]!;
      for (const p of rev[s]!) {
        if (dist[p] === Infinity) {
          dist[p] = dist[s]! + 1;
          queue.push(p);
        }
      }
    }
    if (dist[0] === Infinity) throw new EmptyLanguageError();
    // Reachable live states from the start, numbered in BFS order (start = 0).
    const id = new Int32Array(n).fill(-1);
    const order = [0];
    id[0] = 0;
    for (let q = 0; q < order.length; q++) {
      for (const [, , t] of this.edges[order[q]!]!) {
        if (dist[t] !== Infinity && id[t] === -1) {
          id[t] = order.length;
          order.push(t);
        }
      }
    }
    const offsets = new Uint32Array(order.length + 1);
    const lo: number[] = [];
    const hi: number[] = [];
    const to: number[] = [];
    order.forEach((s, i) => {
      const es = this.edges[s]!.filter(([, , t]) => id[t] !== -1).sort((a, b) => a[0] - b[0]);
      for (const [l, h, t] of es) {
        const last = lo.length - 1;
        if (last >= offsets[i]! && l <= hi[last]!) throw new Error(`DfaBuilder: overlapping byte ranges at state ${s}`);
        if (last >= offsets[i]! && l === hi[last]! + 1 && to[last] === id[t]) hi[last] = h;
        else {
          lo.push(l);
          hi.push(h);
          to.push(id[t]!);
        }
      }
      offsets[i + 1] = lo.length;
    });
    return new Dfa(
      offsets,
      Uint8Array.from(lo),
      Uint8Array.from(hi),
      Int32Array.from(to),
      Uint8Array.from(order, (s) => (this.acc[s] ? 1 : 0)),
      Uint32Array.from(order, (s) => dist[s]!),
    );
  }
}

/** Strings in both languages (the product automaton, built from the start pairs reachable). */
export function intersect(a: Dfa, b: Dfa): Dfa {
  const builder = new DfaBuilder();
  const ids = new Map<number, number>();
  const pairs: [number, number][] = [];
  const idOf = (x: number, y: number) => {
    const key = x * b.stateCount + y;
    let s = ids.get(key);
    if (s === undefined) {
      s = builder.state(a.accepting[x] === 1 && b.accepting[y] === 1);
      ids.set(key, s);
      pairs.push([x, y]);
    }
    return s;
  };
  idOf(0, 0);
  for (let q = 0; q < pairs.length; q++) {
    const [x, y] = pairs[q]!;
    // Walk both sorted range lists together: each overlap is one product edge.
    let i = a.offsets[x]!;
    let j = b.offsets[y]!;
    const iEnd = a.offsets[x + 1]!;
    const jEnd = b.offsets[y + 1]!;
    while (i < iEnd && j < jEnd) {
      const l = Math.max(a.lo[i]!, b.lo[j]!);
      const h = Math.min(a.hi[i]!, b.hi[j]!);
      if (l <= h) builder.edge(q, l, h, idOf(a.to[i]!, b.to[j]!));
      if (a.hi[i]! < b.hi[j]!) i++;
      else j++;
    }
  }
  return builder.build();
}

/** Exactly the given byte strings (a trie). Throws EmptyLanguageError for an empty list. */
export function literalsDfa(texts: readonly Uint8Array[]): Dfa {
  if (texts.length === 0) throw new EmptyLanguageError();
  const builder = new DfaBuilder();
  builder.state();
  const children: Map<number, number>[] = [new Map()];
  for (const t of texts) {
    let s = 0;
    for (const b of t) {
      let c = children[s]!.get(b);
      if (c === undefined) {
        c = builder.state();
        children.push(new Map());
        children[s]!.set(b, c);
        builder.edge(s, b, b, c);
      }
      s = c;
    }
    builder.setAccepting(s);
  }
  return builder.build();
}

/** Code point ranges [lo, hi], inclusive, as a set of Unicode scalar values. */
export type CodePointRanges = readonly (readonly [number, number])[];

/**
 * Adds to `builder` the paths from `from` to `to` that spell, in UTF-8, one code point of
 * `ranges` (surrogates D800-DFFF are never encoded). Only the bytes of well-formed UTF-8 appear.
 * Intermediate states are new; `from` must have no other edges on the lead bytes used (callers
 * building a DFA pass disjoint sets per state).
 */
export function addUtf8(builder: DfaBuilder, from: number, to: number, ranges: CodePointRanges): void {
  // Split at the encoding-length boundaries and around the surrogates, then encode each piece.
  const pieces: [number, number][] = [];
  for (const [l0, h0] of normalizeRanges(ranges)) {
    for (const [bl, bh] of [[0, 0x7f], [0x80, 0x7ff], [0x800, 0xd7ff], [0xe000, 0xffff], [0x10000, 0x10ffff]] as const) {
      const l = Math.max(l0, bl);
      const h = Math.min(h0, bh);
      if (l <= h) pieces.push([l, h]);
    }
  }
  // Lead-byte prefixes are shared through a trie keyed by byte ranges, so the result stays
  // deterministic when pieces share lead bytes.
  const trie = new Map<string, number>();
  const node = (prefix: string) => {
    let s = trie.get(prefix);
    if (s === undefined) {
      s = builder.state();
      trie.set(prefix, s);
    }
    return s;
  };
  const seqs: [number, number][][] = [];
  for (const [l, h] of pieces) splitUtf8(l, h, seqs);
  // Deduplicate identical edges (two sequences sharing a prefix range).
  const seen = new Set<string>();
  for (const seq of seqs) {
    let s = from;
    let prefix = '';
    for (let k = 0; k < seq.length; k++) {
      const [bl, bh] = seq[k]!;
      const last = k === seq.length - 1;
      const key = `${prefix}/${bl}-${bh}`;
      const t = last ? to : node(key);
      const edgeKey = `${s}:${bl}-${bh}:${t}`;
      if (!seen.has(edgeKey)) {
        seen.add(edgeKey);
        builder.edge(s, bl, bh, t);
      }
      s = t;
      prefix = key;
    }
  }
}

/** Sorted, merged, disjoint ranges. */
export function normalizeRanges(ranges: CodePointRanges): [number, number][] {
  const sorted = ranges.filter(([l, h]) => l <= h).map(([l, h]) => [l, h] as [number, number]).sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [l, h] of sorted) {
    const last = out[out.length - 1];
    if (last && l <= last[1] + 1) last[1] = Math.max(last[1], h);
    else out.push([l, h]);
  }
  return out;
}

const UTF8_MAX = [0x7f, 0x7ff, 0xffff, 0x10ffff];

/** Sequences of byte ranges whose cross products are exactly the UTF-8 encodings of lo..hi (same length). */
function splitUtf8(lo: number, hi: number, out: [number, number][][]): void {
  const len = UTF8_MAX.findIndex((m) => lo <= m) + 1;
  if (len === 1) {
    out.push([[lo, hi]]);
    return;
  }
  // Split until every continuation position spans either one value or its whole 0x80-0xBF range.
  for (let i = 1; i < len; i++) {
    const m = (1 << (6 * i)) - 1;
    if ((lo & ~m) !== (hi & ~m)) {
      if ((lo & m) !== 0) {
        splitUtf8(lo, lo | m, out);
        splitUtf8((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) !== m) {
        splitUtf8(lo, (hi & ~m) - 1, out);
        splitUtf8(hi & ~m, hi, out);
        return;
      }
    }
  }
  const a = encodeUtf8(lo);
  const b = encodeUtf8(hi);
  out.push(a.map((x, k) => [x, b[k]!] as [number, number]));
}

function encodeUtf8(cp: number): number[] {
  if (cp < 0x80) return [cp];
  if (cp < 0x800) return [0xc0 | (cp >> 6), 0x80 | (cp & 63)];
  if (cp < 0x10000) return [0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63)];
  return [0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 63), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63)];
}
