/**
 * JSON numbers as byte automata (dfa.ts), with JSON Schema's numeric keywords enforced.
 *
 * Unbounded (no numeric keyword): exactly the JSON number grammar of RFC 8259 (optional `-`, `0`
 * or a nonzero digit then digits, optional fraction, optional exponent; `-0` included), limited
 * so that random weights cannot write forever: at most MAX_INT_DIGITS (16) integer digits,
 * MAX_FRAC_DIGITS (16) fraction digits and MAX_EXP_DIGITS (2) exponent digits, so that every text
 * parses to a finite double (at most 9999999999999999e99, about 1e115; three digits would allow
 * `1e999`, which parses to Infinity). Type "integer": no fraction and no exponent.
 *
 * The rule with bounds: when a schema has minimum, maximum, exclusiveMinimum, exclusiveMaximum or
 * multipleOf, numbers are written without an exponent, with at most 16 integer digits and at most
 * 15 significant digits (first to last nonzero digit), and with multipleOf m at most as many
 * fraction digits as m has; integers are written between -(2^53 - 1) and 2^53 - 1. Every text
 * written then validates, and within these limits every number that satisfies the keywords can be
 * written. Bounds are compared exactly, digit by digit, with the bound's shortest decimal form
 * String(bound) (exponent notation such as 1e-7 or 1e+21 expanded to plain digits), and that
 * order is the order of the parsed doubles: two different decimals of at most 15 significant
 * digits never round to the same double, and one rounds to the bound's double only if it is the
 * bound's shortest form (if that form has 16 or 17 digits, nothing of 15 rounds to it); rounding
 * is monotonic, so <, =, > between a text and String(bound) are those between their doubles,
 * exclusive bounds included. Integers in that range are exact doubles; bounds that are not
 * integers round inward (an integer minimum 2.5 means 3). multipleOf holds exactly in decimal:
 * m = k * 10^e from String(m) (k an integer of at most 15 digits) divides the number's decimal
 * value. Validators that divide in floating point (x / m) can disagree when m is a fraction and
 * the quotient is large (0.3 / 0.1 = 2.9999999999999996).
 *
 * Construction: each constraint is a small automaton over 14 symbols (10 digits, - + . e/E),
 * explored from a tuple state: the number format; one comparator per bound (sign, whether every
 * digit so far is zero (-0 counts as 0), integer-part length and first differing digit, then the
 * fraction digits against the bound's padded with zeros: decided at the first difference); the
 * remainder over the digits scaled by 10^-e (r = (10 r + digit) mod k; a state that has read j of
 * d = -e fraction digits accepts iff r * 10^(d-j) = 0 mod k; for e > 0 the integer's last e
 * zeros are counted rather than carried in r). Comparators and remainder assume a well-formed
 * number, so their product with the format is exact. Products are minimized (Hopcroft) after every
 * step, so no intermediate automaton holds more states than the constraints so far need.
 */
import { DfaBuilder, EmptyLanguageError, MAX_DFA_STATES, TooManyStatesError, type Dfa } from './dfa.ts';

/** Digits a number may have before the point, after it, and in its exponent. */
export const MAX_INT_DIGITS = 16;
export const MAX_FRAC_DIGITS = 16;
export const MAX_EXP_DIGITS = 2;
/** Significant digits (first to last nonzero digit) of a number written under bounds. */
export const MAX_SIGNIFICANT_DIGITS = 15;
/** The largest magnitude of an integer written under bounds: every one is an exact double. */
export const MAX_EXACT_INTEGER = Number.MAX_SAFE_INTEGER;

export interface NumberBounds {
  /** JSON-schema type "integer" (true) or "number". */
  integer: boolean;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  multipleOf?: number;
}

/** The numeric keywords cannot be enforced (or admit no number); `keyword` names the culprit. */
export class NumberBoundsError extends Error {
  constructor(
    readonly keyword: string,
    message: string,
  ) {
    super(message);
    this.name = 'NumberBoundsError';
  }
}

const KEYWORDS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'] as const;
type Keyword = (typeof KEYWORDS)[number];

const memo = new Map<string, Dfa>();
const MEMO_SIZE = 256;

/**
 * A Dfa over the bytes of the JSON number texts that satisfy the bounds (with bounds, within the
 * rule of the header comment: every such text parses to a finite double that validates).
 */
export function numberDfa(bounds: NumberBounds): Dfa {
  // Automata are immutable and every schema's number uses the unbounded one: share them. String
  // keeps NaN and Infinity apart from absent keywords (JSON.stringify writes all three as null).
  const key = [bounds.integer, ...KEYWORDS.map((k) => (bounds[k] === undefined ? '' : String(bounds[k])))].join(',');
  let dfa = memo.get(key);
  if (!dfa) {
    dfa = buildNumberDfa(bounds);
    if (memo.size >= MEMO_SIZE) memo.clear();
    memo.set(key, dfa);
  }
  return dfa;
}

// --- decimals -------------------------------------------------------------------------------

/** A number's plain decimal digits: no exponent, no leading zeros (int "0" below 1), no trailing fraction zeros. */
interface Decimal {
  negative: boolean;
  int: string;
  frac: string;
}

/** The exact value of String(v) (its shortest round-trip form) as plain digits. */
function decimalOf(v: number): Decimal {
  const text = String(Math.abs(v));
  const [mantissa, expText] = text.split('e') as [string, string | undefined];
  const [ip, fp = ''] = mantissa.split('.') as [string, string | undefined];
  let digits = ip + fp;
  let point = ip.length + (expText === undefined ? 0 : Number(expText));
  if (point < 0) {
    digits = '0'.repeat(-point) + digits;
    point = 0;
  }
  if (point > digits.length) digits += '0'.repeat(point - digits.length);
  const int = digits.slice(0, point).replace(/^0+/, '') || '0';
  const frac = digits.slice(point).replace(/0+$/, '');
  return { negative: v < 0 && (int !== '0' || frac !== ''), int, frac };
}

function integerDecimal(v: bigint): Decimal {
  return { negative: v < 0n, int: (v < 0n ? -v : v).toString(), frac: '' };
}

function compareDecimals(a: Decimal, b: Decimal): number {
  const n = Math.max(a.frac.length, b.frac.length);
  const scaled = (d: Decimal) => BigInt(d.int + d.frac.padEnd(n, '0')) * (d.negative ? -1n : 1n);
  const x = scaled(a);
  const y = scaled(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

function floorOf(d: Decimal): bigint {
  const i = BigInt(d.int);
  return d.negative ? -i - (d.frac ? 1n : 0n) : i;
}

function ceilOf(d: Decimal): bigint {
  const i = BigInt(d.int);
  return d.negative ? -i : i + (d.frac ? 1n : 0n);
}

// --- automata over symbols -------------------------------------------------------------------

const DIGITS = 10; // symbols 0-9 are the digits
const MINUS = 10;
const PLUS = 11;
const DOT = 12;
const EXP = 13; // 'e' and 'E': no constraint tells them apart
const SYMBOLS = 14;
const SYMBOL_BYTES: readonly (readonly number[])[] = [
  ...Array.from({ length: DIGITS }, (_, d) => [0x30 + d]),
  [0x2d],
  [0x2b],
  [0x2e],
  [0x45, 0x65],
];

/** A DFA over the symbols: next[s * SYMBOLS + c] is the target, or -1. State 0 is the start. */
interface Auto {
  size: number;
  next: Int32Array;
  accepting: Uint8Array;
}

/** Intermediate products may be larger than a final automaton before they are minimized. */
const PRODUCT_LIMIT = 4 * MAX_DFA_STATES;

/** The automaton of a deterministic step function, explored from `start` (states named by `key`). */
function explore<K>(start: K, key: (k: K) => string, step: (k: K, c: number) => K | null, accepts: (k: K) => boolean, limit = MAX_DFA_STATES): Auto {
  const ids = new Map<string, number>();
  const states: K[] = [];
  const next: number[] = [];
  const accepting: number[] = [];
  const idOf = (k: K) => {
    const name = key(k);
    let id = ids.get(name);
    if (id === undefined) {
      if (states.length >= limit) throw new TooManyStatesError(limit);
      id = states.length;
      ids.set(name, id);
      states.push(k);
      accepting.push(accepts(k) ? 1 : 0);
    }
    return id;
  };
  idOf(start);
  for (let q = 0; q < states.length; q++) {
    for (let c = 0; c < SYMBOLS; c++) {
      const t = step(states[q]!, c);
      next.push(t === null ? -1 : idOf(t));
    }
  }
  return { size: states.length, next: Int32Array.from(next), accepting: Uint8Array.from(accepting) };
}

/** Strings in both languages: the product from the start pair, pairs reachable only. */
function product(a: Auto, b: Auto): Auto {
  const ids = new Map<number, number>();
  const pairs: number[] = [];
  const next: number[] = [];
  const accepting: number[] = [];
  const idOf = (x: number, y: number) => {
    const name = x * b.size + y;
    let id = ids.get(name);
    if (id === undefined) {
      if (accepting.length >= PRODUCT_LIMIT) throw new TooManyStatesError(MAX_DFA_STATES);
      id = accepting.length;
      ids.set(name, id);
      pairs.push(x, y);
      accepting.push(a.accepting[x]! & b.accepting[y]!);
    }
    return id;
  };
  idOf(0, 0);
  for (let q = 0; q < accepting.length; q++) {
    const x = pairs[2 * q]!;
    const y = pairs[2 * q + 1]!;
    for (let c = 0; c < SYMBOLS; c++) {
      const tx = a.next[x * SYMBOLS + c]!;
      const ty = b.next[y * SYMBOLS + c]!;
      next.push(tx < 0 || ty < 0 ? -1 : idOf(tx, ty));
    }
  }
  return { size: accepting.length, next: Int32Array.from(next), accepting: Uint8Array.from(accepting) };
}

/**
 * The minimal automaton of the same language (Hopcroft's partition refinement on the live states
 * plus one sink, which makes every transition defined). Throws EmptyLanguageError when nothing is
 * accepted.
 */
function minimize(a: Auto): Auto {
  const n0 = a.size;
  // Live: reachable from the start and able to reach acceptance.
  const reach = new Uint8Array(n0);
  const stack = [0];
  reach[0] = 1;
  while (stack.length) {
    const s = stack.pop()!;
    for (let c = 0; c < SYMBOLS; c++) {
      const t = a.next[s * SYMBOLS + c]!;
      if (t >= 0 && !reach[t]) {
        reach[t] = 1;
        stack.push(t);
      }
    }
  }
  const revStart = new Int32Array(n0 + 1);
  for (let i = 0; i < a.next.length; i++) if (a.next[i]! >= 0) revStart[a.next[i]! + 1]!++;
  for (let s = 0; s < n0; s++) revStart[s + 1]! += revStart[s]!;
  const rev = new Int32Array(revStart[n0]!);
  const fill = revStart.slice(0, n0);
  for (let i = 0; i < a.next.length; i++) if (a.next[i]! >= 0) rev[fill[a.next[i]!]!++] = (i / SYMBOLS) | 0;
  const live = new Uint8Array(n0);
  for (let s = 0; s < n0; s++) {
    if (a.accepting[s] && reach[s]) {
      live[s] = 1;
      stack.push(s);
    }
  }
  while (stack.length) {
    const t = stack.pop()!;
    for (let i = revStart[t]!; i < revStart[t + 1]!; i++) {
      const s = rev[i]!;
      if (reach[s] && !live[s]) {
        live[s] = 1;
        stack.push(s);
      }
    }
  }
  if (!live[0]) throw new EmptyLanguageError();
  const id = new Int32Array(n0).fill(-1);
  let n = 0;
  for (let s = 0; s < n0; s++) if (live[s]) id[s] = n++;
  const N = n + 1;
  const sink = n;
  // delta[c * N + s], symbol-major, and its inverse in the same layout.
  const delta = new Int32Array(SYMBOLS * N).fill(sink);
  const acc = new Uint8Array(N);
  for (let s = 0; s < n0; s++) {
    if (!live[s]) continue;
    acc[id[s]!] = a.accepting[s]!;
    for (let c = 0; c < SYMBOLS; c++) {
      const t = a.next[s * SYMBOLS + c]!;
      if (t >= 0 && live[t]) delta[c * N + id[s]!] = id[t]!;
    }
  }
  const invStart = new Int32Array(SYMBOLS * N + 1);
  for (let i = 0; i < delta.length; i++) invStart[((i / N) | 0) * N + delta[i]! + 1]!++;
  for (let i = 0; i < SYMBOLS * N; i++) invStart[i + 1]! += invStart[i]!;
  const inv = new Int32Array(SYMBOLS * N);
  const cursor = invStart.slice(0, SYMBOLS * N);
  for (let i = 0; i < delta.length; i++) {
    const c = (i / N) | 0;
    inv[cursor[c * N + delta[i]!]!++] = i - c * N;
  }

  // Blocks are ranges of `elems`; the marked states of a block are moved to its front.
  const elems = new Int32Array(N);
  const pos = new Int32Array(N);
  const blockOf = new Int32Array(N);
  const first = new Int32Array(N);
  const end = new Int32Array(N);
  const marked = new Int32Array(N);
  const waiting = new Uint8Array(N);
  let blocks = 0;
  let p = 0;
  for (const want of [1, 0]) {
    const from = p;
    for (let s = 0; s < N; s++) {
      if (acc[s] === want) {
        elems[p] = s;
        pos[s] = p++;
        blockOf[s] = blocks;
      }
    }
    if (p > from) {
      first[blocks] = from;
      end[blocks] = p;
      blocks++;
    }
  }
  const work: number[] = [];
  for (let b = 0; b < blocks; b++) {
    work.push(b);
    waiting[b] = 1;
  }
  const touched: number[] = [];
  while (work.length) {
    const A = work.pop()!;
    waiting[A] = 0;
    const members = elems.slice(first[A]!, end[A]!);
    for (let c = 0; c < SYMBOLS; c++) {
      for (const t of members) {
        for (let i = invStart[c * N + t]!; i < invStart[c * N + t + 1]!; i++) {
          // A DFA state has one target per symbol: no predecessor comes twice.
          const s = inv[i]!;
          const b = blockOf[s]!;
          const slot = first[b]! + marked[b]!;
          const other = elems[slot]!;
          elems[pos[s]!] = other;
          pos[other] = pos[s]!;
          elems[slot] = s;
          pos[s] = slot;
          if (marked[b]++ === 0) touched.push(b);
        }
      }
      for (const b of touched) {
        const m = marked[b]!;
        marked[b] = 0;
        if (m === end[b]! - first[b]!) continue;
        const nb = blocks++;
        first[nb] = first[b]!;
        end[nb] = first[b]! + m;
        first[b] = end[nb]!;
        for (let i = first[nb]!; i < end[nb]!; i++) blockOf[elems[i]!] = nb;
        if (waiting[b]) {
          work.push(nb);
          waiting[nb] = 1;
        } else {
          const smaller = m <= end[b]! - first[b]! ? nb : b;
          work.push(smaller);
          waiting[smaller] = 1;
        }
      }
      touched.length = 0;
    }
  }

  // The quotient, numbered from the start's block; the sink's block (dead) is dropped.
  const sinkBlock = blockOf[sink]!;
  const newId = new Int32Array(blocks).fill(-1);
  const order = [blockOf[0]!];
  newId[blockOf[0]!] = 0;
  const next: number[] = [];
  const accepting: number[] = [];
  for (let q = 0; q < order.length; q++) {
    const rep = elems[first[order[q]!]!]!;
    accepting.push(acc[rep]!);
    for (let c = 0; c < SYMBOLS; c++) {
      const tb = blockOf[delta[c * N + rep]!]!;
      if (tb === sinkBlock) {
        next.push(-1);
        continue;
      }
      if (newId[tb] === -1) {
        newId[tb] = order.length;
        order.push(tb);
      }
      next.push(newId[tb]!);
    }
  }
  return { size: order.length, next: Int32Array.from(next), accepting: Uint8Array.from(accepting) };
}

function toDfa(a: Auto): Dfa {
  const builder = new DfaBuilder();
  for (let s = 0; s < a.size; s++) builder.state(a.accepting[s] === 1);
  for (let s = 0; s < a.size; s++) {
    for (let c = 0; c < SYMBOLS; c++) {
      const t = a.next[s * SYMBOLS + c]!;
      if (t >= 0) for (const b of SYMBOL_BYTES[c]!) builder.edge(s, b, b, t);
    }
  }
  return builder.build();
}

// --- the constraints -------------------------------------------------------------------------

interface FormatOptions {
  integer: boolean;
  exponent: boolean;
  maxFrac: number;
  /** Infinity: not counted. */
  maxSignificant: number;
}

const Phase = {
  Start: 0,
  Minus: 1,
  Zero: 2, // the integer part is "0"
  Int: 3,
  Dot: 4,
  Frac: 5,
  E: 6,
  ExpSign: 7,
  ExpDigits: 8,
} as const;
type Phase = (typeof Phase)[keyof typeof Phase];

interface FormatState {
  ph: Phase;
  /** Digits read in the current part (integer, fraction or exponent). */
  n: number;
  /** Digits since the first nonzero one (0: none yet), capped at maxSignificant + 1 (no nonzero may follow). */
  span: number;
}

/** The JSON number grammar within the digit limits. */
function formatAuto(o: FormatOptions): Auto {
  const counted = Number.isFinite(o.maxSignificant);
  const spanAfter = (span: number, d: number): number | null => {
    if (!counted) return 0;
    if (span === 0) return d === 0 ? 0 : 1;
    if (d !== 0 && span + 1 > o.maxSignificant) return null;
    return Math.min(span + 1, o.maxSignificant + 1);
  };
  const digitTo = (ph: Phase, n: number, span: number, d: number, max: number): FormatState | null => {
    const s = spanAfter(span, d);
    return n < max && s !== null ? { ph, n: n + 1, span: s } : null;
  };
  const step = (k: FormatState, c: number): FormatState | null => {
    const digit = c < DIGITS;
    switch (k.ph) {
      case Phase.Start:
      case Phase.Minus:
        if (c === MINUS && k.ph === Phase.Start) return { ph: Phase.Minus, n: 0, span: 0 };
        if (c === 0) return { ph: Phase.Zero, n: 1, span: 0 };
        return digit ? digitTo(Phase.Int, 0, 0, c, MAX_INT_DIGITS) : null;
      case Phase.Zero:
      case Phase.Int:
        if (digit) return k.ph === Phase.Int ? digitTo(Phase.Int, k.n, k.span, c, MAX_INT_DIGITS) : null;
        if (c === DOT && !o.integer && o.maxFrac > 0) return { ph: Phase.Dot, n: 0, span: k.span };
        if (c === EXP && !o.integer && o.exponent) return { ph: Phase.E, n: 0, span: 0 };
        return null;
      case Phase.Dot:
      case Phase.Frac:
        if (digit) return digitTo(Phase.Frac, k.n, k.span, c, o.maxFrac);
        if (c === EXP && k.ph === Phase.Frac && o.exponent) return { ph: Phase.E, n: 0, span: 0 };
        return null;
      case Phase.E:
        if (c === PLUS || c === MINUS) return { ph: Phase.ExpSign, n: 0, span: 0 };
        return digit ? { ph: Phase.ExpDigits, n: 1, span: 0 } : null;
      case Phase.ExpSign:
      case Phase.ExpDigits:
        return digit && k.n < MAX_EXP_DIGITS ? { ph: Phase.ExpDigits, n: k.n + 1, span: 0 } : null;
    }
    return null;
  };
  const accepts = (k: FormatState) => k.ph === Phase.Zero || k.ph === Phase.Int || k.ph === Phase.Frac || k.ph === Phase.ExpDigits;
  return explore<FormatState>({ ph: Phase.Start, n: 0, span: 0 }, (k) => `${k.ph},${k.n},${k.span}`, step, accepts);
}

type Op = 'ge' | 'gt' | 'le' | 'lt';

interface CompareState {
  /** 0: no digit yet, 1: integer part, 2: fraction. */
  ph: 0 | 1 | 2;
  neg: boolean;
  /** Every digit so far is 0 (the value may still be zero: -0 counts as 0). */
  zero: boolean;
  /**
   * Integer part: digits read (L + 1 stands for "longer than the bound's"). Fraction, while equal
   * so far: fraction digits matched (capped at the bound's fraction length).
   */
  i: number;
  /**
   * Integer part: the first differing digit so far (-1, 0, 1), meaningful while i <= L: with no
   * leading zeros, a shorter integer part is smaller whatever its digits. Fraction: the magnitude
   * comparison once decided.
   */
  rel: number;
}

/** Numbers x (no exponent) with x op c, decimal-exact. */
function compareAuto(c: Decimal, op: Op): Auto {
  const L = c.int.length;
  const cInt = Array.from(c.int, (ch) => ch.charCodeAt(0) - 48);
  const cFrac = Array.from(c.frac, (ch) => ch.charCodeAt(0) - 48);
  const intRel = (k: CompareState) => (k.i < L ? -1 : k.i > L ? 1 : k.rel);
  const step = (k: CompareState, s: number): CompareState | null => {
    if (s === MINUS) return k.ph === 0 && !k.neg ? { ...k, neg: true } : null;
    if (s === DOT) {
      if (k.ph !== 1) return null;
      return { ...k, ph: 2, i: 0, rel: intRel(k) };
    }
    if (s >= DIGITS) return null;
    const zero = k.zero && s === 0;
    if (k.ph !== 2) {
      if (k.i >= L) return { ph: 1, neg: k.neg, zero, i: L + 1, rel: 0 };
      return { ph: 1, neg: k.neg, zero, i: k.i + 1, rel: k.rel !== 0 ? k.rel : Math.sign(s - cInt[k.i]!) };
    }
    if (k.rel !== 0) return { ...k, zero, i: 0 };
    const r = Math.sign(s - (k.i < cFrac.length ? cFrac[k.i]! : 0));
    return { ...k, zero, i: r !== 0 ? 0 : Math.min(k.i + 1, cFrac.length), rel: r };
  };
  // The bound's fraction has no trailing zeros, so stopping short of it is smaller.
  const magnitude = (k: CompareState) => {
    if (k.ph === 1) {
      const r = intRel(k);
      return r === 0 && cFrac.length > 0 ? -1 : r;
    }
    return k.rel !== 0 ? k.rel : k.i < cFrac.length ? -1 : 0;
  };
  const accepts = (k: CompareState) => {
    if (k.ph === 0) return false;
    const m = magnitude(k);
    const xNeg = k.neg && !k.zero;
    const rel = xNeg === c.negative ? (xNeg ? -m : m) : xNeg ? -1 : 1;
    return op === 'ge' ? rel >= 0 : op === 'gt' ? rel > 0 : op === 'le' ? rel <= 0 : rel < 0;
  };
  return explore<CompareState>({ ph: 0, neg: false, zero: true, i: 0, rel: 0 }, (k) => `${k.ph}${k.neg ? 1 : 0}${k.zero ? 1 : 0},${k.i},${k.rel}`, step, accepts);
}

interface Multiple {
  /** multipleOf = k * 10^e, k not divisible by 10. */
  k: number;
  e: number;
}

interface MultipleState {
  /** 0: no digit yet, 1: integer part, 2: fraction. */
  ph: 0 | 1 | 2;
  /** Residue mod k of the digits read, less the trailing zeros counted in t. */
  q: number;
  /** Trailing zeros of the integer, up to z, held back from q (all-zero digits count as z). */
  t: number;
  /** Fraction digits read. */
  j: number;
}

/**
 * Numbers that are multiples of k * 10^e: X = x * 10^(d) with d = -e >= 0 must be an integer
 * divisible by k, so at most d fraction digits; with z = e > 0 the integer must end in z zeros
 * and the rest must be divisible by k.
 */
function multipleAuto({ k, e }: Multiple): Auto {
  const z = Math.max(e, 0);
  const d = Math.max(-e, 0);
  const times10 = (q: number, n: number) => {
    for (let i = 0; i < n; i++) q = (q * 10) % k;
    return q;
  };
  const step = (s: MultipleState, c: number): MultipleState | null => {
    if (c === MINUS) return s.ph === 0 ? s : null;
    if (c === DOT) return s.ph === 1 && d > 0 ? { ph: 2, q: s.q, t: 0, j: 0 } : null;
    if (c >= DIGITS) return null;
    if (s.ph === 2) return s.j < d ? { ph: 2, q: (s.q * 10 + c) % k, t: 0, j: s.j + 1 } : null;
    if (c === 0) return s.t < z ? { ph: 1, q: s.q, t: s.t + 1, j: 0 } : { ph: 1, q: (s.q * 10) % k, t: s.t, j: 0 };
    // A nonzero digit puts the held-back zeros into the residue.
    return { ph: 1, q: (times10(s.q, s.t + 1) + c) % k, t: 0, j: 0 };
  };
  const accepts = (s: MultipleState) => {
    if (s.ph === 0) return false;
    if (s.ph === 1) return s.t === z && times10(s.q, d) === 0;
    return times10(s.q, d - s.j) === 0;
  };
  return explore<MultipleState>({ ph: 0, q: 0, t: z, j: 0 }, (s) => `${s.ph},${s.q},${s.t},${s.j}`, step, accepts);
}

// --- bounds to automata ------------------------------------------------------------------------

interface Limit {
  keyword: Keyword;
  value: number;
  d: Decimal;
  exclusive: boolean;
}

function buildNumberDfa(bounds: NumberBounds): Dfa {
  for (const kw of KEYWORDS) {
    const v: unknown = bounds[kw];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v))) {
      throw new NumberBoundsError(kw, `"${kw}" must be a finite number, got ${String(v)}`);
    }
  }
  const present = KEYWORDS.filter((kw) => bounds[kw] !== undefined);
  if (present.length === 0) {
    return toDfa(minimize(formatAuto({ integer: bounds.integer, exponent: true, maxFrac: MAX_FRAC_DIGITS, maxSignificant: Infinity })));
  }
  const multiple = bounds.multipleOf === undefined ? undefined : multipleOf(bounds.multipleOf);

  const limit = (keyword: Keyword, exclusive: boolean): Limit | undefined => {
    const value = bounds[keyword];
    return value === undefined ? undefined : { keyword, value, d: decimalOf(value), exclusive };
  };
  // Of a bound and its exclusive twin, the tighter one decides (the exclusive one when equal).
  const tighter = (a: Limit | undefined, b: Limit | undefined, sign: number) => {
    if (!a || !b) return a ?? b;
    const c = compareDecimals(a.d, b.d) * sign;
    return c > 0 || (c === 0 && a.exclusive) ? a : b;
  };
  const lower = tighter(limit('minimum', false), limit('exclusiveMinimum', true), 1);
  const upper = tighter(limit('maximum', false), limit('exclusiveMaximum', true), -1);
  if (lower && upper) {
    const c = compareDecimals(lower.d, upper.d);
    if (c > 0 || (c === 0 && (lower.exclusive || upper.exclusive))) {
      throw new NumberBoundsError(lower.keyword, `"${lower.keyword}" ${lower.value} is ${c > 0 ? 'greater than' : 'equal to'} "${upper.keyword}" ${upper.value}: no number satisfies the schema`);
    }
  }
  const range = [lower, upper].filter((l) => l !== undefined).map((l) => `"${l.keyword}" ${l.value}`).join(' and ');
  const culprit = lower?.keyword ?? upper?.keyword ?? 'multipleOf';

  const comparators: Auto[] = [];
  let format: Auto;
  let written: string;
  if (bounds.integer) {
    // Integers are exact doubles up to 2^53 - 1: the range is clipped there, the bounds rounded inward.
    let lo = -BigInt(MAX_EXACT_INTEGER);
    let hi = BigInt(MAX_EXACT_INTEGER);
    if (lower) {
      const l = lower.exclusive ? floorOf(lower.d) + 1n : ceilOf(lower.d);
      if (l > hi) throw new NumberBoundsError(lower.keyword, `"${lower.keyword}" ${lower.value} is above ${MAX_EXACT_INTEGER}, the largest integer written under bounds (larger ones are not exact as doubles): lower it`);
      if (l > lo) lo = l;
    }
    if (upper) {
      const h = upper.exclusive ? ceilOf(upper.d) - 1n : floorOf(upper.d);
      if (h < -BigInt(MAX_EXACT_INTEGER)) throw new NumberBoundsError(upper.keyword, `"${upper.keyword}" ${upper.value} is below -${MAX_EXACT_INTEGER}, the smallest integer written under bounds (smaller ones are not exact as doubles): raise it`);
      if (h < hi) hi = h;
    }
    if (lo > hi) throw new NumberBoundsError(culprit, `no integer satisfies ${range}: widen the range`);
    format = formatAuto({ integer: true, exponent: false, maxFrac: 0, maxSignificant: Infinity });
    comparators.push(compareAuto(integerDecimal(lo), 'ge'), compareAuto(integerDecimal(hi), 'le'));
    written = 'integer';
  } else {
    const maxFrac = multiple ? Math.min(Math.max(-multiple.e, 0), MAX_FRAC_DIGITS) : MAX_FRAC_DIGITS;
    format = formatAuto({ integer: false, exponent: false, maxFrac, maxSignificant: MAX_SIGNIFICANT_DIGITS });
    if (lower) comparators.push(compareAuto(lower.d, lower.exclusive ? 'gt' : 'ge'));
    if (upper) comparators.push(compareAuto(upper.d, upper.exclusive ? 'lt' : 'le'));
    written = `number (as written under bounds: no exponent, at most ${MAX_INT_DIGITS} integer digits and ${MAX_SIGNIFICANT_DIGITS} significant digits)`;
  }

  let auto: Auto;
  try {
    auto = minimize(format);
    for (const c of comparators) auto = minimize(product(auto, c));
  } catch (err) {
    if (err instanceof EmptyLanguageError) throw new NumberBoundsError(culprit, `no ${written} satisfies ${range}: widen the range`);
    throw err;
  }
  // Only a remainder automaton can grow large (bounds add a few states per digit).
  const tooMany = () =>
    new NumberBoundsError(
      'multipleOf',
      `"multipleOf" ${bounds.multipleOf}${range ? ` with ${range}` : ''} needs an automaton of more than ${MAX_DFA_STATES} states: use a multipleOf with fewer significant digits (or a narrower range), or check it after generation`,
    );
  try {
    if (multiple) {
      // Every residue of k is reachable: no need to explore past the limit to know.
      if (multiple.k > MAX_DFA_STATES) throw tooMany();
      try {
        auto = minimize(product(auto, minimize(multipleAuto(multiple))));
      } catch (err) {
        if (err instanceof EmptyLanguageError) throw new NumberBoundsError('multipleOf', `no multiple of ${bounds.multipleOf} satisfies ${range}: widen the range or change "multipleOf"`);
        throw err;
      }
    }
    return toDfa(auto);
  } catch (err) {
    if (err instanceof TooManyStatesError) throw tooMany();
    throw err;
  }
}

/** multipleOf as k * 10^e from its shortest decimal form, or a refusal. */
function multipleOf(m: number): Multiple {
  if (m <= 0) throw new NumberBoundsError('multipleOf', `"multipleOf" must be greater than 0, got ${m}`);
  const d = decimalOf(m);
  let digits = ((d.int === '0' ? '' : d.int) + d.frac).replace(/^0+/, '');
  let e = -d.frac.length;
  while (digits.endsWith('0')) {
    digits = digits.slice(0, -1);
    e++;
  }
  if (digits.length > MAX_SIGNIFICANT_DIGITS) {
    throw new NumberBoundsError('multipleOf', `"multipleOf" ${m} has ${digits.length} significant digits; at most ${MAX_SIGNIFICANT_DIGITS} are supported: round it`);
  }
  return { k: Number(digits), e };
}
