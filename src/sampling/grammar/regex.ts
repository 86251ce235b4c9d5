/**
 * ECMAScript regular expressions (the `u` flag's syntax and code point semantics, as ajv applies
 * JSON Schema `pattern`) compiled to byte automata (dfa.ts).
 *
 *   pattern --parse--> AST over code point sets --Thompson--> byte NFA --subsets--> DFA --Hopcroft--> Dfa
 *
 * The NFA reads bytes, not code points: each code point set becomes, where it is used, the byte
 * paths of its encoding (UTF-8, or the canonical JSON string escape of each code point), with the
 * shared prefixes of those paths merged through a trie and their runs of continuation bytes merged
 * into shared tails. Determinizing over bytes then takes care of every overlap between encodings
 * (two sets sharing a lead byte) without a separate code point automaton. Bounded repetition is
 * expanded, with every optional copy able to skip straight to the end, so that epsilon closures
 * stay small. The subset construction may make many equivalent states (one per way of reaching
 * a continuation byte, or per way of splitting an ambiguous repetition), so its result is
 * minimized (Hopcroft) before it becomes a Dfa; its own size and work are bounded separately, so
 * that a pattern whose subsets explode is refused in about a second.
 *
 * Search semantics (RegExp.prototype.test, JSON Schema `pattern`) is a rewrite of the AST:
 * `[^]*` before every path not anchored by `^` and after every path not anchored by `$`.
 *
 * Only the regular part of the language is accepted: anything whose meaning depends on context
 * (back-references, look-around, word boundaries, anchors in the middle) is refused with a
 * RegexError naming the construct, rather than silently approximated.
 */
import { Dfa, DfaBuilder, EmptyLanguageError, MAX_DFA_STATES, TooManyStatesError } from './dfa.ts';

/**
 * A pattern that is invalid or cannot be enforced. `construct` is the offending text as written
 * in the pattern ("(?=", "\\1", "{2,1}", "^", ...), or 'size' (too many states) or 'empty' (no
 * string matches); `position` is its 0-based index in the pattern (UTF-16 units), 0 for those two.
 */
export class RegexError extends Error {
  constructor(
    readonly construct: string,
    readonly position: number,
    message: string,
  ) {
    super(message);
    this.name = 'RegexError';
  }
}

export interface RegexOptions {
  /** 'utf8': the DFA reads the matching text as UTF-8 bytes (for guided_regex on free text).
   *  'json-string': the DFA reads a JSON string literal, quotes included, whose decoded value matches:
   *   each code point written canonically, as JSON.stringify writes it: raw UTF-8, except `"` -> \", `\` -> \\,
   *   U+0008 \b, U+000C \f, U+000A \n, U+000D \r, U+0009 \t, other code points below U+0020 as \u00XX with lowercase hex. */
  encoding: 'utf8' | 'json-string';
  /**
   * 'full' (the default): the whole text must match, as if the pattern were `^(?:pattern)$`.
   * 'search': the text must contain a match, as `RegExp.prototype.test` and JSON Schema's
   * `pattern` keyword decide; `^` and `$` then anchor to the start and end of the text.
   */
  match?: 'full' | 'search';
}

/** The largest count a quantifier may give; larger bounds are refused rather than expanded. */
export const MAX_REPEAT = 1000;

/** The DFA of the strings the whole `pattern` matches (see RegexOptions.match). */
export function compileRegex(pattern: string, options: RegexOptions): Dfa {
  let ast = new Parser(pattern).parse();
  checkAnchors(ast, true, true);
  if (options.match === 'search') ast = anchorEnd(anchorStart(ast));
  if (nfaCost(ast) > MAX_NFA_COST) throw sizeError();
  const nfa = new Nfa(options.encoding);
  const start = nfa.state();
  const final = nfa.state();
  if (options.encoding === 'json-string') {
    const open = nfa.state();
    const close = nfa.state();
    nfa.edge(start, QUOTE, QUOTE, open);
    nfa.build(ast, open, close);
    nfa.edge(close, QUOTE, QUOTE, final);
  } else {
    nfa.build(ast, start, final);
  }
  try {
    return minimizeFlat(determinize(nfa, start, final));
  } catch (err) {
    if (err instanceof TooManyStatesError) throw sizeError();
    if (err instanceof EmptyLanguageError) throw new RegexError('empty', 0, 'the regular expression matches no string');
    throw err;
  }
}

function sizeError(): RegexError {
  return new RegexError(
    'size',
    0,
    `the regular expression needs too many automaton states (more than ${MAX_DFA_STATES}); simplify it or lower its repetition counts`,
  );
}

// ---------------------------------------------------------------------------------------------
// Code point sets: sorted, disjoint, non-adjacent inclusive ranges of Unicode scalar values.

type Ranges = [number, number][];

const MAX_CP = 0x10ffff;
const SURROGATES: [number, number] = [0xd800, 0xdfff];

/** Sorted and merged, with the surrogates removed: they have no UTF-8 (or canonical JSON) encoding. */
function normalize(ranges: readonly (readonly [number, number])[]): Ranges {
  const sorted = ranges.filter(([l, h]) => l <= h).map(([l, h]): [number, number] => [l, h]).sort((a, b) => a[0] - b[0]);
  const merged: Ranges = [];
  for (const [l, h] of sorted) {
    const last = merged[merged.length - 1];
    if (last && l <= last[1] + 1) last[1] = Math.max(last[1], h);
    else merged.push([l, h]);
  }
  const out: Ranges = [];
  for (const [l, h] of merged) {
    if (h < SURROGATES[0] || l > SURROGATES[1]) out.push([l, h]);
    else {
      if (l < SURROGATES[0]) out.push([l, SURROGATES[0] - 1]);
      if (h > SURROGATES[1]) out.push([SURROGATES[1] + 1, h]);
    }
  }
  return out;
}

/** All scalar values not in `r` (which must be normalized). */
function complement(r: Ranges): Ranges {
  const out: Ranges = [];
  let next = 0;
  for (const [l, h] of r) {
    if (l > next) out.push([next, l - 1]);
    next = h + 1;
  }
  if (next <= MAX_CP) out.push([next, MAX_CP]);
  return normalize(out);
}

function intersectRanges(a: Ranges, b: readonly [number, number][]): Ranges {
  const out: Ranges = [];
  for (const [l0, h0] of a) {
    for (const [l1, h1] of b) {
      const l = Math.max(l0, l1);
      const h = Math.min(h0, h1);
      if (l <= h) out.push([l, h]);
    }
  }
  return normalize(out);
}

const cp = (c: string) => c.codePointAt(0)!;
const DIGIT: Ranges = [[0x30, 0x39]];
const WORD: Ranges = normalize([[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]]);
/** ECMAScript WhiteSpace (with every Zs) and LineTerminator: what \s matches. */
const SPACE: Ranges = normalize([
  [0x09, 0x0d],
  [0x20, 0x20],
  [0xa0, 0xa0],
  [0x1680, 0x1680],
  [0x2000, 0x200a],
  [0x2028, 0x2029],
  [0x202f, 0x202f],
  [0x205f, 0x205f],
  [0x3000, 0x3000],
  [0xfeff, 0xfeff],
]);
const LINE_TERMINATORS: Ranges = normalize([[0x0a, 0x0a], [0x0d, 0x0d], [0x2028, 0x2029]]);
const DOT: Ranges = complement(LINE_TERMINATORS);
const ALL: Ranges = complement([]);

/**
 * \p{...} and \P{...}: JavaScript's own engine decides what a property contains (so every name it
 * knows is supported, and exactly as ajv would test it), by matching runs over one string that
 * holds every scalar value in order. Cached: a scan costs tens of milliseconds.
 */
const propertyCache = new Map<string, Ranges>();
let everyScalar: string | undefined;

function propertyRanges(body: string): Ranges | undefined {
  let ranges = propertyCache.get(body);
  if (ranges) return ranges;
  let re: RegExp;
  try {
    re = new RegExp(`\\p{${body}}+`, 'gu');
  } catch {
    return undefined;
  }
  if (everyScalar === undefined) {
    const parts: string[] = [];
    for (let lo = 0; lo <= MAX_CP; lo += 0x1000) {
      const chunk: number[] = [];
      for (let c = lo; c < lo + 0x1000; c++) if (c < SURROGATES[0] || c > SURROGATES[1]) chunk.push(c);
      parts.push(String.fromCodePoint(...chunk));
    }
    everyScalar = parts.join('');
  }
  // The string holds U+0000..U+D7FF and U+E000..U+FFFF as one unit each, then pairs.
  const toCp = (i: number) => (i < 0xd800 ? i : i < 0xf800 ? i + 0x800 : 0x10000 + (i - 0xf800) / 2);
  ranges = [];
  for (const m of everyScalar.matchAll(re)) {
    const first = toCp(m.index);
    const end = toCp(m.index + m[0].length);
    ranges.push([first, end - 1]);
  }
  ranges = normalize(ranges);
  propertyCache.set(body, ranges);
  return ranges;
}

// ---------------------------------------------------------------------------------------------
// Parsing.

type Node =
  | { readonly t: 'set'; readonly ranges: Ranges }
  | { readonly t: 'seq'; readonly items: readonly Node[] }
  | { readonly t: 'alt'; readonly items: readonly Node[] }
  | { readonly t: 'rep'; readonly item: Node; readonly min: number; readonly max: number }
  | { readonly t: 'bol' | 'eol'; readonly pos: number };

const SYNTAX_CHARS = '^$\\.*+?()[]{}|/';

/** A class escape's result: one code point (may end a range) or a set (may not). */
type ClassAtom = { cp: number; set?: undefined } | { set: Ranges; cp?: undefined };

const MAX_NESTING = 200;

class Parser {
  private i = 0;
  private depth = 0;

  constructor(private readonly src: string) {}

  parse(): Node {
    const node = this.disjunction();
    if (this.i < this.src.length) {
      // disjunction() stops only at ')' or the end.
      throw this.invalid(')', this.i, 'unmatched ")"');
    }
    return node;
  }

  private invalid(construct: string, pos: number, what: string): RegexError {
    return new RegexError(construct, pos, `invalid regular expression: ${what} at position ${pos}`);
  }

  private unsupported(construct: string, pos: number, what: string): RegexError {
    return new RegexError(construct, pos, `the regular expression construct "${construct}" (${what}) at position ${pos} cannot be enforced by a finite automaton`);
  }

  private peek(k = 0): string {
    return this.src[this.i + k] ?? '';
  }

  private eat(s: string): boolean {
    if (this.src.startsWith(s, this.i)) {
      this.i += s.length;
      return true;
    }
    return false;
  }

  /** The code point at the cursor, consumed. */
  private codePoint(): number {
    const c = this.src.codePointAt(this.i)!;
    this.i += c > 0xffff ? 2 : 1;
    return c;
  }

  private disjunction(): Node {
    const alts = [this.alternative()];
    while (this.eat('|')) alts.push(this.alternative());
    return alts.length === 1 ? alts[0]! : { t: 'alt', items: alts };
  }

  private alternative(): Node {
    const items: Node[] = [];
    while (this.i < this.src.length && this.peek() !== '|' && this.peek() !== ')') items.push(this.term());
    return items.length === 1 ? items[0]! : { t: 'seq', items };
  }

  private term(): Node {
    const pos = this.i;
    const c = this.peek();
    if (c === '^' || c === '$') {
      this.i++;
      if (this.quantifierAhead()) throw this.invalid(this.src.slice(this.i, this.i + 1), this.i, `nothing to repeat (a quantifier after the anchor "${c}")`);
      return { t: c === '^' ? 'bol' : 'eol', pos };
    }
    let atom: Node;
    if (c === '(') atom = this.group();
    else if (c === '[') atom = this.characterClass();
    else if (c === '.') {
      this.i++;
      atom = { t: 'set', ranges: DOT };
    } else if (c === '\\') atom = this.atomEscape();
    else if (c === '*' || c === '+' || c === '?') throw this.invalid(c, pos, `nothing to repeat before "${c}"`);
    else if (c === '{') {
      if (this.quantifierAhead()) throw this.invalid(this.quantifierText(), pos, 'nothing to repeat before the quantifier');
      throw this.invalid('{', pos, 'a lone "{" (write \\{ for the character)');
    } else if (c === '}' || c === ']') throw this.invalid(c, pos, `a lone "${c}" (write \\${c} for the character)`);
    else {
      const v = this.codePoint();
      atom = { t: 'set', ranges: normalize([[v, v]]) };
    }
    return this.quantified(atom);
  }

  /** Whether a quantifier starts at the cursor (a "{" only when it is a well-formed count). */
  private quantifierAhead(): boolean {
    const c = this.peek();
    return c === '*' || c === '+' || c === '?' || (c === '{' && /^\{\d+(,\d*)?\}/.test(this.src.slice(this.i)));
  }

  private quantifierText(): string {
    return /^\{\d+(,\d*)?\}/.exec(this.src.slice(this.i))![0];
  }

  private quantified(atom: Node): Node {
    if (!this.quantifierAhead()) return atom;
    const pos = this.i;
    const c = this.peek();
    let min: number;
    let max: number;
    let text: string;
    if (c === '{') {
      text = this.quantifierText();
      this.i += text.length;
      const m = /^\{(\d+)(,(\d*))?\}$/.exec(text)!;
      min = Number(m[1]);
      max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
      if (min > max) throw this.invalid(text, pos, `the quantifier "${text}" has its numbers out of order`);
      if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT)) {
        throw new RegexError(text, pos, `the repetition count in "${text}" at position ${pos} is above the limit of ${MAX_REPEAT}`);
      }
    } else {
      this.i++;
      text = c;
      [min, max] = c === '*' ? [0, Infinity] : c === '+' ? [1, Infinity] : [0, 1];
    }
    this.eat('?'); // lazy: the same language
    if (this.quantifierAhead()) throw this.invalid(this.peek(), this.i, `nothing to repeat (a quantifier after "${text}")`);
    return { t: 'rep', item: atom, min, max };
  }

  private group(): Node {
    const pos = this.i;
    // Every later pass recurses over the AST too: bound the depth well inside the stack.
    if (++this.depth > MAX_NESTING) throw new RegexError('(', pos, `the regular expression nests groups more than ${MAX_NESTING} deep at position ${pos}`);
    this.i++;
    if (this.eat('?')) {
      const rest = this.src.slice(this.i);
      if (rest.startsWith('=')) throw this.unsupported('(?=', pos, 'look-ahead');
      if (rest.startsWith('!')) throw this.unsupported('(?!', pos, 'negative look-ahead');
      if (rest.startsWith('<=')) throw this.unsupported('(?<=', pos, 'look-behind');
      if (rest.startsWith('<!')) throw this.unsupported('(?<!', pos, 'negative look-behind');
      if (this.eat(':')) {
        // non-capturing
      } else if (rest.startsWith('<')) {
        const m = /^<([^>]*)>/.exec(rest);
        if (!m || !/^[\p{ID_Start}$_][\p{ID_Continue}$\u200c\u200d]*$/u.test(m[1]!)) throw this.invalid('(?<', pos, 'a malformed group name');
        this.i += m[0].length;
      } else {
        const m = /^[a-zA-Z-]*[:)]/.exec(rest);
        if (m) throw this.unsupported(`(?${m[0]}`, pos, 'inline flags');
        throw this.invalid('(?', pos, 'an unknown group kind');
      }
    }
    const body = this.disjunction();
    if (!this.eat(')')) throw this.invalid('(', pos, 'a "(" that is never closed');
    this.depth--;
    return body;
  }

  private characterClass(): Node {
    const pos = this.i;
    this.i++;
    const negated = this.eat('^');
    const parts: (readonly [number, number])[] = [];
    for (;;) {
      if (this.i >= this.src.length) throw this.invalid('[', pos, 'a "[" that is never closed');
      if (this.eat(']')) break;
      const atomPos = this.i;
      const a = this.classAtom();
      if (this.peek() === '-' && this.peek(1) !== ']' && this.peek(1) !== '') {
        this.i++;
        const b = this.classAtom();
        const text = this.src.slice(atomPos, this.i);
        if (a.set || b.set) throw this.invalid(text, atomPos, `the class range "${text}" has a character class escape as an end`);
        if (a.cp > b.cp) throw this.invalid(text, atomPos, `the class range "${text}" is out of order`);
        parts.push([a.cp, b.cp]);
      } else if (a.set) parts.push(...a.set);
      else parts.push([a.cp, a.cp]);
    }
    const set = normalize(parts);
    return { t: 'set', ranges: negated ? complement(set) : set };
  }

  private classAtom(): ClassAtom {
    if (this.peek() !== '\\') return { cp: this.codePoint() };
    const pos = this.i;
    this.i++;
    const c = this.peek();
    if (c === 'b') {
      this.i++;
      return { cp: 0x08 };
    }
    if (c === '-') {
      this.i++;
      return { cp: 0x2d };
    }
    if (c === 'B') throw this.invalid('\\B', pos, 'the escape "\\B" inside a class');
    if (/[1-9]/.test(c) || c === 'k') throw this.invalid(`\\${c}`, pos, `the escape "\\${c}" inside a class`);
    return this.escape(pos);
  }

  private atomEscape(): Node {
    const pos = this.i;
    this.i++;
    const c = this.peek();
    if (c === 'b') throw this.unsupported('\\b', pos, 'a word boundary');
    if (c === 'B') throw this.unsupported('\\B', pos, 'a non-word boundary');
    if (/[1-9]/.test(c)) {
      const digits = /^\d+/.exec(this.src.slice(this.i))![0];
      throw this.unsupported(`\\${digits}`, pos, 'a back-reference');
    }
    if (c === 'k') {
      const m = /^k<[^>]*>/.exec(this.src.slice(this.i));
      throw this.unsupported(m ? `\\${m[0]}` : '\\k', pos, 'a back-reference');
    }
    const a = this.escape(pos);
    return { t: 'set', ranges: a.set ?? normalize([[a.cp, a.cp]]) };
  }

  /** The escapes shared by atoms and classes; the cursor is just after the backslash at `pos`. */
  private escape(pos: number): ClassAtom {
    if (this.i >= this.src.length) throw this.invalid('\\', pos, 'a "\\" at the end of the pattern');
    const c = this.peek();
    this.i++;
    switch (c) {
      case 'd':
        return { set: DIGIT };
      case 'D':
        return { set: complement(DIGIT) };
      case 'w':
        return { set: WORD };
      case 'W':
        return { set: complement(WORD) };
      case 's':
        return { set: SPACE };
      case 'S':
        return { set: complement(SPACE) };
      case 'f':
        return { cp: 0x0c };
      case 'n':
        return { cp: 0x0a };
      case 'r':
        return { cp: 0x0d };
      case 't':
        return { cp: 0x09 };
      case 'v':
        return { cp: 0x0b };
      case '0':
        if (/\d/.test(this.peek())) throw this.invalid(this.src.slice(pos, this.i + 1), pos, 'an octal escape (not allowed with the u flag)');
        return { cp: 0 };
      case 'c': {
        const l = this.peek();
        if (!/[A-Za-z]/.test(l)) throw this.invalid('\\c', pos, 'a "\\c" not followed by a letter');
        this.i++;
        return { cp: cp(l) % 32 };
      }
      case 'x': {
        const m = /^[0-9a-fA-F]{2}/.exec(this.src.slice(this.i));
        if (!m) throw this.invalid('\\x', pos, 'a "\\x" not followed by two hex digits');
        this.i += 2;
        return { cp: parseInt(m[0], 16) };
      }
      case 'u':
        return { cp: this.unicodeEscape(pos) };
      case 'p':
      case 'P': {
        const m = /^\{([A-Za-z0-9_=]+)\}/.exec(this.src.slice(this.i));
        const text = m ? `\\${c}${m[0]}` : `\\${c}`;
        const ranges = m ? propertyRanges(m[1]!) : undefined;
        if (!ranges) throw this.invalid(text, pos, `an unknown Unicode property in "${text}"`);
        this.i += m![0].length;
        return { set: c === 'p' ? ranges : complement(ranges) };
      }
      default: {
        // Syntax characters and "/" are the u flag's identity escapes. Other ASCII punctuation is
        // accepted too: it has one possible meaning, and patterns written for other engines
        // (Python, PCRE) escape it freely ("\-", "\@", "\#").
        if (SYNTAX_CHARS.includes(c) || /[!-/:-@[-`{-~]/.test(c)) return { cp: cp(c) };
        throw this.invalid(`\\${c}`, pos, `the unknown escape "\\${c}"${/[AZzG]/.test(c) ? ' (an anchor of another regex dialect)' : ''}`);
      }
    }
  }

  private unicodeEscape(pos: number): number {
    const rest = this.src.slice(this.i);
    let m = /^\{([0-9a-fA-F]+)\}/.exec(rest);
    if (m) {
      const v = parseInt(m[1]!, 16);
      if (v > MAX_CP) throw this.invalid(`\\u${m[0]}`, pos, 'a code point above U+10FFFF');
      this.i += m[0].length;
      return v;
    }
    m = /^[0-9a-fA-F]{4}/.exec(rest);
    if (!m) throw this.invalid('\\u', pos, 'a "\\u" not followed by four hex digits or {hex}');
    this.i += 4;
    const v = parseInt(m[0], 16);
    // With the u flag an escaped surrogate pair is one code point.
    const trail = /^\\u(d[c-f][0-9a-f]{2})/i.exec(this.src.slice(this.i));
    if (v >= 0xd800 && v <= 0xdbff && trail) {
      this.i += 6;
      return 0x10000 + ((v - 0xd800) << 10) + (parseInt(trail[1]!, 16) - 0xdc00);
    }
    return v;
  }
}

/**
 * `^` and `$` constrain where they stand: a full match (or a search) can honour them only where
 * nothing can have been read before (`^`) or can be read after (`$`). There they are no-ops (or,
 * in search mode, anchors), elsewhere they are refused.
 */
function checkAnchors(node: Node, atStart: boolean, atEnd: boolean): void {
  switch (node.t) {
    case 'bol':
      if (!atStart) throw new RegexError('^', node.pos, `the regular expression construct "^" (an anchor not at the start of the pattern or of an alternative) at position ${node.pos} cannot be enforced by a finite automaton`);
      return;
    case 'eol':
      if (!atEnd) throw new RegexError('$', node.pos, `the regular expression construct "$" (an anchor not at the end of the pattern or of an alternative) at position ${node.pos} cannot be enforced by a finite automaton`);
      return;
    case 'set':
      return;
    case 'alt':
      for (const item of node.items) checkAnchors(item, atStart, atEnd);
      return;
    case 'rep':
      // A second iteration starts after the first: only an at-most-once repetition keeps the position.
      checkAnchors(node.item, atStart && node.max <= 1, atEnd && node.max <= 1);
      return;
    case 'seq': {
      // Item k is at the start when only `^`s precede it, at the end when only `$`s follow.
      const items = node.items;
      let firstOther = items.findIndex((x) => x.t !== 'bol');
      if (firstOther < 0) firstOther = items.length;
      let lastOther = items.length - 1;
      while (lastOther >= 0 && items[lastOther]!.t === 'eol') lastOther--;
      items.forEach((item, k) => checkAnchors(item, atStart && k <= firstOther, atEnd && k >= lastOther));
    }
  }
}

/** Whether `node` holds an anchor of kind `t` (checkAnchors has placed them at its edge). */
function hasAnchor(node: Node, t: 'bol' | 'eol'): boolean {
  switch (node.t) {
    case 'bol':
    case 'eol':
      return node.t === t;
    case 'set':
      return false;
    case 'rep':
      return hasAnchor(node.item, t);
    case 'seq':
    case 'alt':
      return node.items.some((x) => hasAnchor(x, t));
  }
}

const ANY_STAR: Node = { t: 'rep', item: { t: 'set', ranges: ALL }, min: 0, max: Infinity };

/**
 * Search mode's left side: `[^]*` before every path that does not start with `^`. The prefix is
 * pushed only into the first item of a sequence (`[^]*(A|B)C` = `([^]*A|[^]*B)C`), so nothing is
 * duplicated; the anchors themselves stay and become no-ops.
 */
function anchorStart(node: Node): Node {
  if (!hasAnchor(node, 'bol')) return { t: 'seq', items: [ANY_STAR, node] };
  switch (node.t) {
    case 'bol':
      return node;
    case 'alt':
      return { t: 'alt', items: node.items.map(anchorStart) };
    case 'rep':
      // At most once (checkAnchors): either the anchored item, or nothing and then anything.
      if (node.max === 0) return ANY_STAR;
      return node.min === 1 ? anchorStart(node.item) : { t: 'alt', items: [anchorStart(node.item), ANY_STAR] };
    case 'seq':
      return { t: 'seq', items: [anchorStart(node.items[0]!), ...node.items.slice(1)] };
    case 'set':
    case 'eol':
      return node;
  }
}

/** Search mode's right side, the mirror of anchorStart. */
function anchorEnd(node: Node): Node {
  if (!hasAnchor(node, 'eol')) return { t: 'seq', items: [node, ANY_STAR] };
  switch (node.t) {
    case 'eol':
      return node;
    case 'alt':
      return { t: 'alt', items: node.items.map(anchorEnd) };
    case 'rep':
      if (node.max === 0) return ANY_STAR;
      return node.min === 1 ? anchorEnd(node.item) : { t: 'alt', items: [anchorEnd(node.item), ANY_STAR] };
    case 'seq':
      return { t: 'seq', items: [...node.items.slice(0, -1), anchorEnd(node.items[node.items.length - 1]!)] };
    case 'set':
    case 'bol':
      return node;
  }
}

/**
 * About the number of NFA fragments once repetition is expanded, checked before building: nested
 * counts multiply (`(a{1000}){1000}`), and such a pattern could exhaust memory long before the
 * DFA's state limit is reached.
 */
const MAX_NFA_COST = 2 * MAX_DFA_STATES;

function nfaCost(node: Node): number {
  switch (node.t) {
    case 'set':
    case 'bol':
    case 'eol':
      return 1;
    case 'seq':
    case 'alt':
      return node.items.reduce((n, x) => n + nfaCost(x), 1);
    case 'rep':
      return 1 + nfaCost(node.item) * (node.max === Infinity ? node.min + 1 : node.max);
  }
}

// ---------------------------------------------------------------------------------------------
// Encodings: a code point set as sequences of byte ranges, one byte each.

type ByteSeq = [number, number][];

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const CONT: [number, number] = [0x80, 0xbf];

/** UTF-8: byte range sequences whose cross products are exactly the encodings of `ranges`. */
function utf8Seqs(ranges: Ranges): ByteSeq[] {
  const out: ByteSeq[] = [];
  // [first value, last value, number of continuation bytes, lead byte marker] per encoding length.
  const lengths = [
    [0, 0x7f, 0, 0],
    [0x80, 0x7ff, 1, 0xc0],
    [0x800, 0xffff, 2, 0xe0],
    [0x10000, MAX_CP, 3, 0xf0],
  ] as const;
  for (const [l0, h0] of ranges) {
    for (const [first, last, k, marker] of lengths) {
      const l = Math.max(l0, first);
      const h = Math.min(h0, last);
      if (l <= h) digitSeqs(l, h, k, marker, [], out);
    }
  }
  return out;
}

/**
 * lo..hi as digit sequences in base 64 below a lead digit, the way a decimal range splits into
 * "same leading digits, then any digits": a partial first and last lead value are recursed into,
 * the whole lead values between are followed by `k` unrestricted continuation bytes.
 */
function digitSeqs(lo: number, hi: number, k: number, marker: number, prefix: ByteSeq, out: ByteSeq[]): void {
  const byteOf = (digit: number) => (prefix.length === 0 ? marker | digit : 0x80 | digit);
  if (k === 0) {
    out.push([...prefix, [byteOf(lo), byteOf(hi)]]);
    return;
  }
  const m = 64 ** k;
  let top0 = Math.floor(lo / m);
  let top1 = Math.floor(hi / m);
  if (top0 === top1) {
    digitSeqs(lo % m, hi % m, k - 1, marker, [...prefix, [byteOf(top0), byteOf(top0)]], out);
    return;
  }
  if (lo % m !== 0) {
    digitSeqs(lo % m, m - 1, k - 1, marker, [...prefix, [byteOf(top0), byteOf(top0)]], out);
    top0++;
  }
  let tail: [number, number] | undefined;
  if (hi % m !== m - 1) {
    tail = [hi % m, top1];
    top1--;
  }
  if (top0 <= top1) out.push([...prefix, [byteOf(top0), byteOf(top1)], ...Array.from({ length: k }, (): [number, number] => [...CONT])]);
  if (tail) digitSeqs(0, tail[0], k - 1, marker, [...prefix, [byteOf(tail[1]), byteOf(tail[1])]], out);
}

const SHORT_ESCAPES = new Map<number, string>([
  [0x22, '"'],
  [0x5c, '\\'],
  [0x08, 'b'],
  [0x0c, 'f'],
  [0x0a, 'n'],
  [0x0d, 'r'],
  [0x09, 't'],
]);

/** The canonical JSON string encoding (JSON.stringify's): escapes below U+0020 and for `"` `\`, raw UTF-8 otherwise. */
function jsonSeqs(ranges: Ranges): ByteSeq[] {
  const raw = intersectRanges(ranges, [[0x20, 0x21], [0x23, 0x5b], [0x5d, MAX_CP]]);
  const out = utf8Seqs(raw);
  for (const [l, h] of intersectRanges(ranges, [[0, 0x1f], [QUOTE, QUOTE], [BACKSLASH, BACKSLASH]])) {
    for (let c = l; c <= h; c++) {
      const short = SHORT_ESCAPES.get(c);
      const text = short !== undefined ? `\\${short}` : `\\u${c.toString(16).padStart(4, '0')}`;
      out.push(Array.from(text, (ch): [number, number] => [cp(ch), cp(ch)]));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The byte NFA (Thompson).

class Nfa {
  readonly eps: number[][] = [];
  readonly lo: number[][] = [];
  readonly hi: number[][] = [];
  readonly to: number[][] = [];

  /** Per set node: a repetition places one node many times. */
  private readonly fragments = new Map<Node, Fragment>();

  constructor(private readonly encoding: RegexOptions['encoding']) {}

  get size(): number {
    return this.eps.length;
  }

  state(): number {
    this.eps.push([]);
    this.lo.push([]);
    this.hi.push([]);
    this.to.push([]);
    return this.eps.length - 1;
  }

  edge(from: number, lo: number, hi: number, to: number): void {
    this.lo[from]!.push(lo);
    this.hi[from]!.push(hi);
    this.to[from]!.push(to);
  }

  epsilon(from: number, to: number): void {
    this.eps[from]!.push(to);
  }

  /**
   * Paths from `from` to `to` that read exactly `node`'s language. Only fresh states are made
   * inside, so a fragment is entered through `from` alone and left through `to` alone.
   */
  build(node: Node, from: number, to: number): void {
    switch (node.t) {
      case 'set':
        let f = this.fragments.get(node);
        if (!f) {
          f = fragment(this.encoding === 'utf8' ? utf8Seqs(node.ranges) : jsonSeqs(node.ranges));
          this.fragments.set(node, f);
        }
        this.instantiate(f, from, to);
        return;
      case 'bol':
      case 'eol':
        this.epsilon(from, to);
        return;
      case 'alt':
        for (const item of node.items) this.build(item, from, to);
        return;
      case 'seq': {
        if (node.items.length === 0) this.epsilon(from, to);
        let cur = from;
        node.items.forEach((item, k) => {
          const next = k === node.items.length - 1 ? to : this.state();
          this.build(item, cur, next);
          cur = next;
        });
        return;
      }
      case 'rep': {
        let cur = from;
        for (let k = 0; k < node.min; k++) {
          const next = this.state();
          this.build(node.item, cur, next);
          cur = next;
        }
        if (node.max === Infinity) {
          const loop = this.state();
          const back = this.state();
          this.epsilon(cur, loop);
          this.build(node.item, loop, back);
          this.epsilon(back, loop);
          this.epsilon(loop, to);
          return;
        }
        // Every optional copy may be the last: each skips straight to `to`.
        for (let k = node.min; k < node.max; k++) {
          this.epsilon(cur, to);
          const next = this.state();
          this.build(node.item, cur, next);
          cur = next;
        }
        this.epsilon(cur, to);
      }
    }
  }

  /** A copy of `f` between `from` and `to`. */
  private instantiate(f: Fragment, from: number, to: number): void {
    const base = this.size;
    for (let k = 0; k < f.states; k++) this.state();
    const at = (x: number) => (x === FROM ? from : x === TO ? to : base + x);
    for (let e = 0; e < f.lo.length; e++) this.edge(at(f.from[e]!), f.lo[e]!, f.hi[e]!, at(f.to[e]!));
  }
}

/**
 * A code point set's byte paths, made once per set and copied wherever a repetition places the
 * set: inner states are numbered from 0, and FROM / TO stand for the two ends.
 */
interface Fragment {
  readonly states: number;
  readonly from: readonly number[];
  readonly lo: readonly number[];
  readonly hi: readonly number[];
  readonly to: readonly number[];
}

const FROM = -1;
const TO = -2;

/** The sequences through a trie of shared prefixes, ending in shared runs of continuation bytes. */
function fragment(seqs: readonly ByteSeq[]): Fragment {
  let states = 0;
  const from: number[] = [];
  const lo: number[] = [];
  const hi: number[] = [];
  const to: number[] = [];
  const edge = (a: number, l: number, h: number, b: number) => {
    from.push(a);
    lo.push(l);
    hi.push(h);
    to.push(b);
  };
  const trie = new Map<string, number>();
  const tails = [TO]; // tails[k]: k continuation bytes of any value, then TO
  const tail = (k: number) => {
    while (tails.length <= k) {
      const s = states++;
      edge(s, CONT[0], CONT[1], tails[tails.length - 1]!);
      tails.push(s);
    }
    return tails[k]!;
  };
  for (const seq of seqs) {
    let k = 0;
    while (k < seq.length - 1 && seq[seq.length - 1 - k]![0] === CONT[0] && seq[seq.length - 1 - k]![1] === CONT[1]) k++;
    const n = seq.length - k;
    let s = FROM;
    let key = '';
    for (let i = 0; i < n; i++) {
      const [l, h] = seq[i]!;
      if (i === n - 1) {
        edge(s, l, h, tail(k));
        break;
      }
      key += `${l}-${h},`;
      let child = trie.get(key);
      if (child === undefined) {
        child = states++;
        trie.set(key, child);
        edge(s, l, h, child);
      }
      s = child;
    }
  }
  return { states, from, lo, hi, to };
}

// ---------------------------------------------------------------------------------------------
// Determinization and minimization.

/** A DFA in Dfa's flat layout, before pruning and minimization. */
interface FlatDfa {
  readonly offsets: ArrayLike<number>;
  readonly lo: ArrayLike<number>;
  readonly hi: ArrayLike<number>;
  readonly to: ArrayLike<number>;
  readonly accepting: ArrayLike<number>;
}

/** The subset construction may exceed the final limit by this factor before minimizing shrinks it. */
const RAW_STATE_FACTOR = 2;
/**
 * NFA states summed over all subsets: an ambiguous repetition (`(\w+\s?){1,1000}`) makes subsets
 * of hundreds of states each, and this bounds the time spent before giving up (about a second).
 */
const MAX_SUBSET_WORK = 3_000_000;

function determinize(nfa: Nfa, start: number, final: number): FlatDfa {
  const n = nfa.size;
  const stamp = new Int32Array(n);
  let gen = 0;
  // Only states with byte edges (or the final one) tell subsets apart: epsilon-only states are dropped.
  const closure = (seeds: readonly number[]): Int32Array => {
    gen++;
    const stack: number[] = [];
    const out: number[] = [];
    for (const s of seeds) {
      if (stamp[s] !== gen) {
        stamp[s] = gen;
        stack.push(s);
      }
    }
    while (stack.length > 0) {
      const s = stack.pop()!;
      if (s === final || nfa.lo[s]!.length > 0) out.push(s);
      for (const t of nfa.eps[s]!) {
        if (stamp[t] !== gen) {
          stamp[t] = gen;
          stack.push(t);
        }
      }
    }
    return sortSmall(Int32Array.from(out));
  };
  const sets: number[][] = [];
  const ids = new SetTable();
  const byMove = new SetTable();
  const idOf = (set: Int32Array): number => {
    let id = ids.get(set);
    if (id < 0) {
      if (sets.length >= RAW_STATE_FACTOR * MAX_DFA_STATES) throw new TooManyStatesError(MAX_DFA_STATES);
      id = sets.length;
      sets.push(Array.from(set));
      ids.set(set, id);
    }
    return id;
  };
  const seen = new Int32Array(n);
  let seenGen = 0;
  /** The distinct targets, sorted: the key of a move. */
  const distinct = (ts: readonly number[]): Int32Array => {
    seenGen++;
    const out = new Int32Array(ts.length);
    let k = 0;
    for (const t of ts) {
      if (seen[t] !== seenGen) {
        seen[t] = seenGen;
        out[k++] = t;
      }
    }
    return sortSmall(out.subarray(0, k));
  };
  idOf(closure([start]));
  const isCut = new Uint8Array(257);
  const pointIndex = new Int32Array(257);
  let work = 0;
  const offsets = [0];
  const lo: number[] = [];
  const hi: number[] = [];
  const to: number[] = [];
  const accepting: number[] = [];
  for (let d = 0; d < sets.length; d++) {
    const members = sets[d]!;
    accepting.push(members.includes(final) ? 1 : 0);
    // Split the members' byte ranges into disjoint intervals between all their end points.
    const marked: number[] = [];
    for (const s of members) {
      const ls = nfa.lo[s]!;
      const hs = nfa.hi[s]!;
      for (let e = 0; e < ls.length; e++) {
        if (!isCut[ls[e]!]) {
          isCut[ls[e]!] = 1;
          marked.push(ls[e]!);
        }
        if (!isCut[hs[e]! + 1]) {
          isCut[hs[e]! + 1] = 1;
          marked.push(hs[e]! + 1);
        }
      }
    }
    const points = marked.sort((a, b) => a - b);
    points.forEach((x, k) => {
      pointIndex[x] = k;
      isCut[x] = 0;
    });
    const targets: number[][] = points.map(() => []);
    for (const s of members) {
      const ls = nfa.lo[s]!;
      const hs = nfa.hi[s]!;
      const ts = nfa.to[s]!;
      for (let e = 0; e < ls.length; e++) {
        for (let p = pointIndex[ls[e]!]!; points[p]! <= hs[e]!; p++) targets[p]!.push(ts[e]!);
      }
    }
    work += members.length;
    if (work > MAX_SUBSET_WORK) throw new TooManyStatesError(MAX_DFA_STATES);
    let prev: number[] = [];
    let prevTarget = -1;
    for (let p = 0; p + 1 < points.length; p++) {
      const ts = targets[p]!;
      if (ts.length === 0) continue;
      // Neighbouring intervals usually come from the same edges ([A-Z] and [a-z] of \w): same move.
      let t: number;
      if (ts.length === prev.length && ts.every((x, k) => x === prev[k])) t = prevTarget;
      else {
        const move = distinct(ts);
        t = byMove.get(move);
        if (t < 0) {
          t = idOf(closure(ts));
          byMove.set(move, t);
        }
        prev = ts;
        prevTarget = t;
      }
      lo.push(points[p]!);
      hi.push(points[p + 1]! - 1);
      to.push(t);
    }
    offsets.push(lo.length);
  }
  return { offsets, lo, hi, to, accepting };
}

/** Ascending, in place: insertion sort for the few states most subsets have, the built-in sort beyond. */
function sortSmall(a: Int32Array): Int32Array {
  if (a.length > 16) return a.sort();
  for (let i = 1; i < a.length; i++) {
    const x = a[i]!;
    let j = i - 1;
    while (j >= 0 && a[j]! > x) {
      a[j + 1] = a[j]!;
      j--;
    }
    a[j + 1] = x;
  }
  return a;
}

/** Sets of NFA states (sorted Int32Arrays) to numbers, by hash: string keys cost more than the rest of the construction. */
class SetTable {
  private readonly buckets = new Map<number, { set: Int32Array; value: number }[]>();

  private static hash(set: Int32Array): number {
    let h = set.length;
    for (let i = 0; i < set.length; i++) h = Math.imul(h ^ set[i]!, 0x9e3779b1) ^ (h >>> 15);
    return h;
  }

  get(set: Int32Array): number {
    const bucket = this.buckets.get(SetTable.hash(set));
    if (bucket) {
      for (const entry of bucket) {
        const other = entry.set;
        if (other.length !== set.length) continue;
        let same = true;
        for (let i = 0; i < set.length && same; i++) same = other[i] === set[i];
        if (same) return entry.value;
      }
    }
    return -1;
  }

  set(set: Int32Array, value: number): void {
    const h = SetTable.hash(set);
    const bucket = this.buckets.get(h);
    if (bucket) bucket.push({ set, value });
    else this.buckets.set(h, [{ set, value }]);
  }
}

/** The minimal DFA of the same language (Hopcroft's partition refinement over byte classes). */
export function minimize(dfa: Dfa): Dfa {
  return minimizeFlat(dfa);
}

function minimizeFlat(dfa: FlatDfa): Dfa {
  const n = dfa.accepting.length;
  const N = n + 1; // plus an explicit dead state, so that every transition exists
  const dead = n;
  // Bytes no edge ever separates behave as one symbol.
  const cut = new Uint8Array(257);
  cut[0] = 1;
  for (let e = 0; e < dfa.lo.length; e++) {
    cut[dfa.lo[e]!] = 1;
    cut[dfa.hi[e]! + 1] = 1;
  }
  const classOf = new Uint16Array(256);
  const classLo: number[] = [];
  for (let b = 0; b < 256; b++) {
    if (cut[b]) classLo.push(b);
    classOf[b] = classLo.length - 1;
  }
  const K = classLo.length;
  const classHi = classLo.map((_, c) => (c + 1 < K ? classLo[c + 1]! - 1 : 255));
  // delta[c * N + s]: class-major, so that the per-class passes below read and write in order.
  const delta = new Int32Array(N * K).fill(dead);
  for (let s = 0; s < n; s++) {
    for (let e = dfa.offsets[s]!; e < dfa.offsets[s + 1]!; e++) {
      for (let c = classOf[dfa.lo[e]!]!; c <= classOf[dfa.hi[e]!]!; c++) delta[c * N + s] = dfa.to[e]!;
    }
  }
  // Predecessors per class, as compressed lists: inv[invStart[c*(N+1)+t] ..] are the s with delta(s, c) = t.
  const invStart = new Int32Array(K * (N + 1) + 1);
  for (let c = 0; c < K; c++) for (let s = 0; s < N; s++) invStart[c * (N + 1) + delta[c * N + s]! + 1]!++;
  for (let i = 1; i < invStart.length; i++) invStart[i]! += invStart[i - 1]!;
  const inv = new Int32Array(N * K);
  const fill = invStart.slice();
  for (let c = 0; c < K; c++) for (let s = 0; s < N; s++) inv[fill[c * (N + 1) + delta[c * N + s]!]!++] = s;

  // The refinable partition: blocks are slices of `elems`; marked states gather at a block's front.
  const elems = new Int32Array(N);
  const loc = new Int32Array(N);
  const blockOf = new Int32Array(N);
  const bStart: number[] = [];
  const bEnd: number[] = [];
  const bMark: number[] = [];
  {
    let k = 0;
    for (const want of [1, 0]) {
      const first = k;
      for (let s = 0; s < N; s++) {
        if ((s < n && dfa.accepting[s] === 1 ? 1 : 0) === want) {
          elems[k] = s;
          loc[s] = k++;
          blockOf[s] = bStart.length;
        }
      }
      if (k > first) {
        bStart.push(first);
        bEnd.push(k);
        bMark.push(first);
      }
    }
  }
  const work: number[] = [];
  // A splitter whose states have no predecessors on its class would split nothing: not queued.
  const queue = (b: number) => {
    for (let c = 0; c < K; c++) {
      const base = c * (N + 1);
      for (let i = bStart[b]!; i < bEnd[b]!; i++) {
        const t = elems[i]!;
        if (invStart[base + t + 1]! > invStart[base + t]!) {
          work.push(b * K + c);
          break;
        }
      }
    }
  };
  for (let b = 0; b < bStart.length; b++) queue(b);
  const touched: number[] = [];
  const splitter = new Int32Array(N);
  while (work.length > 0) {
    const w = work.pop()!;
    const B = Math.floor(w / K);
    const c = w % K;
    const base = c * (N + 1);
    // A copy: marking reorders states inside blocks, B included.
    const size = bEnd[B]! - bStart[B]!;
    for (let x = 0; x < size; x++) splitter[x] = elems[bStart[B]! + x]!;
    for (let x = 0; x < size; x++) {
      const t = splitter[x]!;
      for (let j = invStart[base + t]!; j < invStart[base + t + 1]!; j++) {
        const s = inv[j]!;
        const b = blockOf[s]!;
        if (loc[s]! < bMark[b]!) continue; // already marked
        if (bMark[b] === bStart[b]) touched.push(b);
        const m = bMark[b]!;
        const other = elems[m]!;
        elems[loc[s]!] = other;
        loc[other] = loc[s]!;
        elems[m] = s;
        loc[s] = m;
        bMark[b] = m + 1;
      }
    }
    for (const b of touched) {
      const mid = bMark[b]!;
      bMark[b] = bStart[b]!;
      if (mid === bEnd[b]) continue; // every state moved: no split
      // The smaller half becomes the new block, so each state is relabelled O(log n) times.
      const nb = bStart.length;
      if (mid - bStart[b]! <= bEnd[b]! - mid) {
        bStart.push(bStart[b]!);
        bEnd.push(mid);
        bStart[b] = mid;
      } else {
        bStart.push(mid);
        bEnd.push(bEnd[b]!);
        bEnd[b] = mid;
      }
      bMark.push(bStart[nb]!);
      bMark[b] = bStart[b]!;
      for (let i = bStart[nb]!; i < bEnd[nb]!; i++) blockOf[elems[i]!] = nb;
      queue(nb);
    }
    touched.length = 0;
  }

  // One state per block, numbered from the start's block; the dead state's block is dropped.
  const deadBlock = blockOf[dead]!;
  if (blockOf[0] === deadBlock) throw new EmptyLanguageError();
  const builder = new DfaBuilder();
  const newId = new Int32Array(bStart.length).fill(-1);
  const order: number[] = [];
  const visit = (b: number) => {
    if (newId[b] === -1) {
      newId[b] = builder.state(dfa.accepting[elems[bStart[b]!]!] === 1);
      order.push(b);
    }
    return newId[b]!;
  };
  visit(blockOf[0]!);
  for (let q = 0; q < order.length; q++) {
    const b = order[q]!;
    const rep = elems[bStart[b]!]!;
    let c = 0;
    while (c < K) {
      const tb = blockOf[delta[c * N + rep]!]!;
      let c1 = c;
      while (c1 + 1 < K && blockOf[delta[(c1 + 1) * N + rep]!] === tb) c1++;
      if (tb !== deadBlock) builder.edge(newId[b]!, classLo[c]!, classHi[c1]!, visit(tb));
      c = c1 + 1;
    }
  }
  return builder.build();
}
