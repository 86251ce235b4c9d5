/**
 * GBNF, llama.cpp's grammar format, compiled to the engine's grammar form (grammar.ts).
 *
 *   grammar   rule*                            the start rule is `root` (or the one asked for)
 *   rule      name ::= alternatives            names: [a-zA-Z0-9_-]+
 *   alts      sequence | sequence | ...        a sequence may be empty: `x ::= "a" |`
 *   sequence  item*
 *   item      atom postfix*                    postfix: * + ? {m} {m,} {m,n}  (m, n <= 1000)
 *   atom      "literal" | [class] | [^class] | . | name | ( alternatives )
 *   escapes   \n \r \t \\ \" \[ \] \xHH \uHHHH \UHHHHHHHH   in literals and classes alike
 *   comments  # to the end of the line
 *
 * Literals, classes and `.` are over Unicode code points (`\xHH` is the code point U+00HH, not a
 * byte, as in llama.cpp) and read their UTF-8 bytes; `.` is any code point, newline included.
 * Surrogates (U+D800-DFFF) have no UTF-8 form: a literal naming one is refused, and classes
 * leave them out. In a class, `-` first or last is itself.
 *
 * Where a rule ends: llama.cpp ends a rule at a newline outside parentheses (unless the line
 * ends in `|`), and then requires the next rule or the end. Here a newline outside parentheses
 * ends the rule only when what follows is another rule (`name ::=`) or the end of the text, and
 * otherwise the body goes on. Every grammar llama.cpp accepts reads the same; bodies that go on
 * at the next line (`| "b"` starting a line, a long sequence wrapped) are accepted too.
 *
 * Refused: token references (`<think>`, `<[1234]>`, `!<...>`, newer llama.cpp's): they name
 * vocabulary tokens, while these grammars constrain text. Also a rule defined twice (a mistake
 * far more often than not), a class that matches nothing, and bounds above 1000.
 *
 * Lowering:
 *  - A run of literals, classes and `.` in a sequence is one terminal: a chain DFA, one code point
 *    set per position, so `"\"" [a-z] "="` costs the matcher one terminal, not three.
 *  - A repetition of such a run (`[0-9]+`, `"ab"{2,5}`, `[a-f]?`) is one DFA too: the chain
 *    copied, with accepting states at the counts allowed and a loop back for an open bound; `?`
 *    of any such DFA makes its start accepting. This stays deterministic because every chain
 *    state has exactly one outgoing set.
 *  - Any other repetition becomes right recursion, which the matcher runs as a tail call:
 *      x*      R ::= x R | ""          x+  x R            x?  R ::= x | ""
 *      x{m,n}  m copies of x, then O1 ::= x O2 | "", ..., O(n-m) ::= x | ""  (linear in n)
 *      x{m,}   m copies of x, then x*
 *  - A repeated item that can match the empty string is repeated without it (`(a?)*` reads as
 *    `(a)*`, `x{2,5}` of a nullable x as its non-empty part `{0,5}`): same language, but `R ::= x R`
 *    could otherwise reach R again before reading a byte, which the matcher refuses (left
 *    recursion), as llama.cpp does for such grammars.
 *  - A group of single code points (`("+" | "-")`) is one class.
 */
import { DfaBuilder, EmptyLanguageError, TooManyStatesError, addUtf8, normalizeRanges, type Dfa } from './dfa.ts';
import { Grammar, GrammarBuilder, GrammarError, type Sym } from './grammar.ts';

/** Parses a GBNF grammar (llama.cpp's syntax) into the engine's grammar form; the start rule is `root`. Throws GrammarError with the construct and `line L, column C` in the message. */
export function parseGbnf(text: string, startRule = 'root'): Grammar {
  return new Lowering(text, new Parser(text).grammar()).build(startRule);
}

/** The largest repetition bound accepted (llama.cpp's own limit is 2000). */
export const MAX_GBNF_REPEAT = 1000;

const MAX_CODE_POINT = 0x10ffff;
/** Repetitions of a terminal run up to this many code point positions become one DFA; longer ones are rules. */
const MAX_CHAIN_POSITIONS = 1024;

type Ranges = [number, number][];

/**
 * A run of code point sets (`sets`, one per position), then optionally `rep.sets` repeated
 * min..max times; `optional`: the empty string too (the whole made optional).
 */
interface Chars {
  readonly kind: 'chars';
  readonly sets: readonly Ranges[];
  readonly rep?: { readonly sets: readonly Ranges[]; readonly min: number; readonly max: number };
  readonly optional?: true;
}
/** A rule reference; `nonEmpty`: the rule's language without the empty string. */
interface Ref {
  readonly kind: 'ref';
  readonly name: string;
  readonly pos: number;
  readonly nonEmpty?: true;
}
interface Group {
  readonly kind: 'group';
  readonly alts: readonly (readonly Node[])[];
  readonly pos: number;
}
interface Rep {
  readonly kind: 'rep';
  readonly item: Node;
  readonly min: number;
  readonly max: number;
  readonly pos: number;
}
type Node = Chars | Ref | Group | Rep;

interface RuleDef {
  readonly name: string;
  readonly pos: number;
  readonly alts: readonly (readonly Node[])[];
}

const EMPTY: Chars = { kind: 'chars', sets: [] };
const HEADER = /[A-Za-z0-9_-]+[ \t]*::=/y;
const NAME = /[A-Za-z0-9_-]+/y;
const NAME_CHAR = /^[A-Za-z0-9_-]$/;
const DIGITS = /[0-9]+/y;
const HEX = /^[0-9a-fA-F]+$/;

/** `line L, column C` (1-based; columns count code points) of a UTF-16 offset. */
function where(text: string, at: number): string {
  let line = 1;
  let start = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < at; i = text.indexOf('\n', i + 1)) {
    line++;
    start = i + 1;
  }
  let column = 1;
  for (let i = start; i < at; i += (text.codePointAt(i) ?? 0) > 0xffff ? 2 : 1) column++;
  return `line ${line}, column ${column}`;
}

function describe(c: string | undefined): string {
  if (c === undefined) return 'end of input';
  if (c === '\n' || c === '\r') return 'end of line';
  return JSON.stringify(c);
}

function hexCp(cp: number): string {
  return `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;
}

function isSurrogate(cp: number): boolean {
  return cp >= 0xd800 && cp <= 0xdfff;
}

function complement(set: Ranges): Ranges {
  const out: Ranges = [];
  let next = 0;
  for (const [lo, hi] of set) {
    if (lo > next) out.push([next, lo - 1]);
    next = hi + 1;
  }
  if (next <= MAX_CODE_POINT) out.push([next, MAX_CODE_POINT]);
  return out;
}

function withoutSurrogates(set: Ranges): Ranges {
  const out: Ranges = [];
  for (const [lo, hi] of set) {
    if (lo < 0xd800) out.push([lo, Math.min(hi, 0xd7ff)]);
    if (hi > 0xdfff) out.push([Math.max(lo, 0xe000), hi]);
  }
  return out;
}

/** Appends `node` to a sequence, joining it to a preceding plain run of code points. */
function pushItem(items: Node[], node: Node): void {
  if (node.kind === 'chars' && node.sets.length === 0 && !node.rep) return;
  const last = items[items.length - 1];
  if (node.kind === 'chars' && !node.optional && last?.kind === 'chars' && !last.rep && !last.optional) items[items.length - 1] = { kind: 'chars', sets: [...last.sets, ...node.sets], rep: node.rep };
  else items.push(node);
}

function seqOf(nodes: readonly Node[]): Node[] {
  const items: Node[] = [];
  for (const n of nodes) pushItem(items, n);
  return items;
}

function mkGroup(alts: readonly (readonly Node[])[], pos: number): Node {
  if (alts.length === 1 && alts[0]!.length === 1) return alts[0]![0]!;
  const single = (a: readonly Node[]) => a.length === 1 && a[0]!.kind === 'chars' && !a[0]!.rep && !a[0]!.optional && a[0]!.sets.length === 1;
  if (alts.length > 1 && alts.every(single)) return { kind: 'chars', sets: [normalizeRanges(alts.flatMap((a) => (a[0] as Chars).sets[0]!))] };
  return { kind: 'group', alts, pos };
}

function mkRep(item: Node, min: number, max: number, pos: number): Node {
  if (max === 0) return EMPTY;
  if (min === 1 && max === 1) return item;
  if (item.kind === 'chars' && min === 0 && max === 1) {
    // The chain's start state has a single outgoing set, so accepting there too stays deterministic.
    return item.optional || (item.sets.length === 0 && (!item.rep || item.rep.min === 0)) ? item : { ...item, optional: true };
  }
  if (item.kind === 'chars' && !item.rep && !item.optional) {
    if (item.sets.length === 0) return item;
    const k = item.sets.length;
    if (min === max && min * k <= MAX_CHAIN_POSITIONS) return { kind: 'chars', sets: Array.from({ length: min }, () => item.sets).flat() };
    if ((max === Infinity ? min + 1 : max) * k <= MAX_CHAIN_POSITIONS) return { kind: 'chars', sets: [], rep: { sets: item.sets, min, max } };
  }
  return { kind: 'rep', item, min, max, pos };
}

/** Text -> rule definitions (syntax only: references are resolved when lowering). */
class Parser {
  private pos = 0;

  constructor(private readonly text: string) {}

  private fail(construct: string, message: string, at = this.pos, note = ''): never {
    throw new GrammarError(construct, `${message} at ${where(this.text, at)}${note}`);
  }

  private peek(): string | undefined {
    return this.text[this.pos];
  }

  grammar(): RuleDef[] {
    const defs: RuleDef[] = [];
    const seen = new Map<string, RuleDef>();
    this.skipBlank(this.pos);
    while (this.pos < this.text.length) {
      const start = this.pos;
      const name = this.match(NAME);
      if (name === null) this.fail('rule', `expected a rule name, found ${describe(this.peek())}`);
      this.skipInline();
      if (!this.text.startsWith('::=', this.pos)) this.fail('rule', `expected "::=" after the rule name "${name}", found ${describe(this.peek())}`);
      this.pos += 3;
      const alts = this.alternates(null);
      const c = this.peek();
      if (c !== undefined && c !== '\n' && c !== '\r') {
        if (c === ')') this.fail('group', `")" without a matching "("`);
        this.fail('syntax', `unexpected ${describe(c)}`);
      }
      const prior = seen.get(name);
      if (prior) this.fail(name, `rule "${name}" is defined twice (first at ${where(this.text, prior.pos)}), again`, start);
      const def = { name, pos: start, alts };
      seen.set(name, def);
      defs.push(def);
      this.skipBlank(this.pos);
    }
    return defs;
  }

  private match(re: RegExp): string | null {
    re.lastIndex = this.pos;
    const m = re.exec(this.text);
    if (!m) return null;
    this.pos = re.lastIndex;
    return m[0];
  }

  private skipInline(): void {
    while (this.peek() === ' ' || this.peek() === '\t') this.pos++;
  }

  /** Skips spaces, comments and newlines from `at` (without moving `pos`); returns where they end. */
  private blankEnd(at: number): number {
    const t = this.text;
    for (;;) {
      const c = t[at];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r') at++;
      else if (c === '#') {
        const nl = t.indexOf('\n', at);
        at = nl === -1 ? t.length : nl;
      } else return at;
    }
  }

  private skipBlank(at: number): void {
    this.pos = this.blankEnd(at);
  }

  /**
   * Skips spaces and comments. Inside parentheses (`openParen` set) newlines are spaces too;
   * outside, a newline is one unless the next rule or the end of the text follows it.
   */
  private skipSpace(openParen: number | null): void {
    const t = this.text;
    for (;;) {
      const c = t[this.pos];
      if (c === ' ' || c === '\t') this.pos++;
      else if (c === '#') {
        const nl = t.indexOf('\n', this.pos);
        this.pos = nl === -1 ? t.length : nl;
      } else if (c === '\n' || c === '\r') {
        if (openParen !== null) {
          this.pos++;
          continue;
        }
        const after = this.blankEnd(this.pos);
        if (after >= t.length || this.headerAt(after)) return;
        this.pos = after;
      } else return;
    }
  }

  private headerAt(at: number): boolean {
    HEADER.lastIndex = at;
    return HEADER.test(this.text);
  }

  private alternates(openParen: number | null): Node[][] {
    const alts = [this.sequence(openParen)];
    while (this.peek() === '|') {
      this.pos++;
      alts.push(this.sequence(openParen));
    }
    return alts;
  }

  private sequence(openParen: number | null): Node[] {
    const items: Node[] = [];
    for (;;) {
      this.skipSpace(openParen);
      const start = this.pos;
      const c = this.peek();
      if (c === undefined || c === '|' || c === ')' || c === '\n' || c === '\r') return items;
      let atom: Node;
      if (c === '"') atom = this.literal();
      else if (c === '[') atom = this.charClass();
      else if (c === '.') {
        this.pos++;
        atom = { kind: 'chars', sets: [[[0, MAX_CODE_POINT]]] };
      } else if (c === '(') {
        this.pos++;
        const alts = this.alternates(start);
        if (this.peek() !== ')') this.fail('group', `"(" is never closed (${describe(this.peek())} reached)`, start);
        this.pos++;
        atom = mkGroup(alts, start);
      } else if (NAME_CHAR.test(c)) {
        if (this.headerAt(start)) {
          if (openParen !== null) this.fail('group', `"(" is never closed before the next rule`, openParen);
          this.fail('rule', 'a rule must start on a new line; a new rule starts', start);
        }
        atom = { kind: 'ref', name: this.match(NAME)!, pos: start };
      } else if (c === '<' || (c === '!' && this.text[this.pos + 1] === '<')) {
        this.fail('token', 'token references (<...>, <[id]>, !<...>) are not supported', start, ": these grammars constrain text, not token ids; write the token's text as a literal");
      } else if (c === '*' || c === '+' || c === '?' || c === '{') {
        this.fail('repetition', `"${c}" has nothing to repeat`, start);
      } else if (c === "'") {
        this.fail('string literal', 'string literals are written in double quotes', start);
      } else {
        this.fail('syntax', `unexpected ${describe(c)}`, start);
      }
      for (;;) {
        this.skipSpace(openParen);
        const op = this.pos;
        const p = this.peek();
        if (p === '*') atom = mkRep(atom, 0, Infinity, op);
        else if (p === '+') atom = mkRep(atom, 1, Infinity, op);
        else if (p === '?') atom = mkRep(atom, 0, 1, op);
        else if (p === '{') {
          const [min, max] = this.bounds();
          atom = mkRep(atom, min, max, op);
          continue;
        } else break;
        this.pos++;
      }
      pushItem(items, atom);
    }
  }

  private bounds(): [number, number] {
    const at = this.pos;
    this.pos++;
    this.skipInline();
    const m = this.match(DIGITS);
    if (m === null) this.fail('repetition', `expected a number after "{", found ${describe(this.peek())}`);
    const min = Number(m);
    let max = min;
    this.skipInline();
    if (this.peek() === ',') {
      this.pos++;
      this.skipInline();
      const n = this.match(DIGITS);
      max = n === null ? Infinity : Number(n);
      this.skipInline();
    }
    if (this.peek() !== '}') this.fail('repetition', `expected "}" to close the repetition, found ${describe(this.peek())}`);
    this.pos++;
    const shown = this.text.slice(at, this.pos);
    if (min > MAX_GBNF_REPEAT || (max !== Infinity && max > MAX_GBNF_REPEAT)) this.fail('repetition', `repetition ${shown} exceeds the limit of ${MAX_GBNF_REPEAT}`, at);
    if (max < min) this.fail('repetition', `repetition ${shown} has its maximum below its minimum`, at);
    return [min, max];
  }

  private literal(): Chars {
    const start = this.pos;
    this.pos++;
    const sets: Ranges[] = [];
    for (;;) {
      if (this.pos >= this.text.length) this.fail('string literal', 'unterminated string literal', start);
      if (this.peek() === '"') break;
      const at = this.pos;
      const cp = this.char('string literal');
      if (isSurrogate(cp)) this.fail('string literal', `${hexCp(cp)} is a surrogate, not a character`, at);
      sets.push([[cp, cp]]);
    }
    this.pos++;
    return { kind: 'chars', sets };
  }

  private charClass(): Chars {
    const start = this.pos;
    this.pos++;
    const negated = this.peek() === '^';
    if (negated) this.pos++;
    const ranges: Ranges = [];
    for (;;) {
      if (this.pos >= this.text.length) this.fail('character class', 'unterminated character class', start);
      if (this.peek() === ']') break;
      const lo = this.char('character class');
      let hi = lo;
      // As in llama.cpp, "-" first or last in the class is itself.
      if (this.peek() === '-' && this.pos + 1 < this.text.length && this.text[this.pos + 1] !== ']') {
        const dash = this.pos;
        this.pos++;
        hi = this.char('character class');
        if (hi < lo) this.fail('character class', `range ${hexCp(lo)}-${hexCp(hi)} is reversed`, dash);
      }
      ranges.push([lo, hi]);
    }
    this.pos++;
    let set = normalizeRanges(ranges);
    if (negated) set = complement(set);
    set = withoutSurrogates(set);
    if (set.length === 0) this.fail('character class', 'character class matches no character', start);
    return { kind: 'chars', sets: [set] };
  }

  /** One code point, written raw or as an escape. */
  private char(construct: string): number {
    const at = this.pos;
    const cp = this.text.codePointAt(at)!;
    if (cp !== 0x5c) {
      this.pos += cp > 0xffff ? 2 : 1;
      return cp;
    }
    const e = this.text[at + 1];
    this.pos += 2;
    switch (e) {
      case 'n':
        return 0x0a;
      case 'r':
        return 0x0d;
      case 't':
        return 0x09;
      case '\\':
      case '"':
      case '[':
      case ']':
        return e.charCodeAt(0);
      case 'x':
        return this.hex(2, at);
      case 'u':
        return this.hex(4, at);
      case 'U':
        return this.hex(8, at);
      case undefined:
        return this.fail(construct, `unterminated ${construct}`, at);
      default:
        return this.fail('escape', `unknown escape "\\${e}" in a ${construct}`, at, ' (known: \\n \\r \\t \\\\ \\" \\[ \\] \\xHH \\uHHHH \\UHHHHHHHH)');
    }
  }

  private hex(digits: number, at: number): number {
    const letter = this.text[at + 1];
    const h = this.text.slice(this.pos, this.pos + digits);
    if (h.length !== digits || !HEX.test(h)) this.fail('escape', `"\\${letter}" needs ${digits} hex digits`, at);
    this.pos += digits;
    const cp = parseInt(h, 16);
    if (cp > MAX_CODE_POINT) this.fail('escape', `"\\${letter}${h}" is beyond U+10FFFF`, at);
    return cp;
  }
}

/** Rule definitions -> Grammar: references resolved, repetition lowered, terminals built. */
class Lowering {
  private readonly b = new GrammarBuilder();
  private readonly byName = new Map<string, RuleDef>();
  private readonly nullableRule = new Map<string, boolean>();
  private readonly nonEmptyRules = new Map<string, number>();
  private readonly pending: { name: string; id: number }[] = [];
  private readonly dfas = new Map<string, Dfa>();
  private readonly counters = new Map<string, number>();
  /** Where each rule came from, for the errors Grammar reports by rule name. */
  private readonly origins = new Map<string, { what: string; pos: number }>();

  constructor(
    private readonly text: string,
    private readonly defs: readonly RuleDef[],
  ) {
    for (const d of defs) this.byName.set(d.name, d);
  }

  build(startRule: string): Grammar {
    if (!this.byName.has(startRule)) {
      const hint = this.defs.length === 0 ? 'the grammar has no rules' : `rules: ${this.defs.slice(0, 8).map((d) => d.name).join(', ')}${this.defs.length > 8 ? ', ...' : ''}`;
      throw new GrammarError(startRule, `no "${startRule}" rule: a GBNF grammar starts at "${startRule}" (${hint})`);
    }
    for (const d of this.defs) {
      this.b.rule(d.name);
      this.origins.set(d.name, { what: 'definition', pos: d.pos });
    }
    for (const d of this.defs) for (const a of d.alts) for (const n of a) this.checkRefs(n);
    this.computeNullable();
    for (const d of this.defs) this.b.define(this.b.rule(d.name), this.lowerAlts(d.alts, d.name));
    while (this.pending.length > 0) {
      const { name, id } = this.pending.pop()!;
      const alts = this.byName.get(name)!.alts.flatMap((a) => this.nonEmptySeq(a));
      this.b.define(id, this.lowerAlts(alts, name));
    }
    try {
      return this.b.build(this.b.rule(startRule));
    } catch (e) {
      if (!(e instanceof GrammarError)) throw e;
      const origin = this.origins.get(e.construct);
      if (!origin) throw e;
      const said = origin.what === 'definition' ? `rule "${e.construct}" is defined` : `"${e.construct}" is the ${origin.what}`;
      throw new GrammarError(e.construct, `${e.message} (${said} at ${where(this.text, origin.pos)})`);
    }
  }

  private checkRefs(n: Node): void {
    if (n.kind === 'ref' && !this.byName.has(n.name)) throw new GrammarError(n.name, `rule "${n.name}" is used but never defined, at ${where(this.text, n.pos)}`);
    if (n.kind === 'group') for (const a of n.alts) for (const m of a) this.checkRefs(m);
    if (n.kind === 'rep') this.checkRefs(n.item);
  }

  /** Which rules can match the empty string: a fixed point, iterated both ways to converge fast on top-down and bottom-up grammars alike. */
  private computeNullable(): void {
    for (const d of this.defs) this.nullableRule.set(d.name, false);
    for (let changed = true, pass = 0; changed; pass++) {
      changed = false;
      const order = pass % 2 === 0 ? [...this.defs].reverse() : this.defs;
      for (const d of order) {
        if (this.nullableRule.get(d.name)) continue;
        if (d.alts.some((a) => a.every((n) => this.nullable(n)))) {
          this.nullableRule.set(d.name, true);
          changed = true;
        }
      }
    }
  }

  private nullable(n: Node): boolean {
    switch (n.kind) {
      case 'chars':
        return n.optional === true || (n.sets.length === 0 && (!n.rep || n.rep.min === 0));
      case 'ref':
        return !n.nonEmpty && this.nullableRule.get(n.name) === true;
      case 'group':
        return n.alts.some((a) => a.every((m) => this.nullable(m)));
      case 'rep':
        return n.min === 0 || this.nullable(n.item);
    }
  }

  /** The node's language without the empty string; null when nothing is left. */
  private nonEmpty(n: Node): Node | null {
    if (!this.nullable(n)) return n;
    switch (n.kind) {
      case 'chars': {
        if (n.optional) return { kind: 'chars', sets: n.sets, rep: n.rep };
        return n.rep ? { kind: 'chars', sets: [], rep: { ...n.rep, min: 1 } } : null;
      }
      case 'ref':
        return { ...n, nonEmpty: true };
      case 'group': {
        const alts = n.alts.flatMap((a) => this.nonEmptySeq(a));
        return alts.length > 0 ? mkGroup(alts, n.pos) : null;
      }
      case 'rep': {
        // Every non-empty string of x{m,n} (x nullable or m = 0) is 1..n non-empty pieces of x.
        const y = this.nullable(n.item) ? this.nonEmpty(n.item) : n.item;
        if (!y) return null;
        return n.max === 1 ? y : mkGroup([seqOf([y, mkRep(y, 0, n.max - 1, n.pos)])], n.pos);
      }
    }
  }

  /** A sequence's non-empty strings as alternatives: the i-th starts with item i's non-empty part, the ones before it empty. */
  private nonEmptySeq(items: readonly Node[]): Node[][] {
    if (!items.every((n) => this.nullable(n))) return [[...items]];
    const out: Node[][] = [];
    items.forEach((n, i) => {
      const y = this.nonEmpty(n);
      if (y) out.push(seqOf([y, ...items.slice(i + 1)]));
    });
    return out;
  }

  /** A new rule named after `hint` (with a suffix if a rule of that name exists), remembered as `what` at `pos`. */
  private newRule(hint: string, pos: number, what: string): number {
    const id = this.b.fresh(hint);
    this.origins.set(this.b.nameOf(id), { what, pos });
    return id;
  }

  private fresh(owner: string, pos: number, what: string): number {
    const k = (this.counters.get(owner) ?? 0) + 1;
    this.counters.set(owner, k);
    return this.newRule(`${owner}-${k}`, pos, what);
  }

  private lowerAlts(alts: readonly (readonly Node[])[], owner: string): Sym[][] {
    return alts.map((a) => this.lowerSeq(a, owner));
  }

  private lowerSeq(items: readonly Node[], owner: string): Sym[] {
    const out: Sym[] = [];
    for (const n of items) out.push(...this.lowerNode(n, owner));
    return out;
  }

  private lowerNode(n: Node, owner: string): Sym[] {
    switch (n.kind) {
      case 'chars':
        return n.sets.length === 0 && !n.rep ? [] : [GrammarBuilder.t(this.dfa(n))];
      case 'ref':
        return [GrammarBuilder.r(n.nonEmpty ? this.nonEmptyRule(n.name) : this.b.rule(n.name))];
      case 'group': {
        if (n.alts.length === 1) return this.lowerSeq(n.alts[0]!, owner);
        const id = this.fresh(owner, n.pos, 'group');
        this.b.define(id, this.lowerAlts(n.alts, owner));
        return [GrammarBuilder.r(id)];
      }
      case 'rep':
        return this.lowerRep(n, owner);
    }
  }

  private nonEmptyRule(name: string): number {
    let id = this.nonEmptyRules.get(name);
    if (id === undefined) {
      id = this.newRule(`${name}-nonempty`, this.byName.get(name)!.pos, `non-empty part of rule "${name}" (for a repetition)`);
      this.nonEmptyRules.set(name, id);
      this.pending.push({ name, id });
    }
    return id;
  }

  private lowerRep(n: Rep, owner: string): Sym[] {
    if (this.nullable(n.item)) {
      const y = this.nonEmpty(n.item);
      return y ? this.lowerNode(mkRep(y, 0, n.max, n.pos), owner) : [];
    }
    let x = this.lowerNode(n.item, owner);
    if (x.length === 0) return [];
    if (x.length > 1) {
      // One symbol to copy: m copies of a long sequence would multiply its length.
      const id = this.fresh(owner, n.pos, 'repeated group');
      this.b.define(id, [x]);
      x = [GrammarBuilder.r(id)];
    }
    const out: Sym[] = [];
    for (let i = 0; i < n.min; i++) out.push(...x);
    if (n.max === Infinity) {
      const id = this.fresh(owner, n.pos, 'repetition');
      this.b.define(id, [[...x, GrammarBuilder.r(id)], []]);
      out.push(GrammarBuilder.r(id));
    } else if (n.max > n.min) {
      let next: number | undefined;
      for (let k = n.max - n.min; k >= 1; k--) {
        const id = this.fresh(owner, n.pos, 'repetition');
        this.b.define(id, [[...x, ...(next === undefined ? [] : [GrammarBuilder.r(next)])], []]);
        next = id;
      }
      out.push(GrammarBuilder.r(next!));
    }
    return out;
  }

  private dfa(n: Chars): Dfa {
    const key = JSON.stringify([n.sets, n.rep ? [n.rep.sets, n.rep.min, n.rep.max === Infinity ? -1 : n.rep.max] : 0, n.optional === true]);
    let dfa = this.dfas.get(key);
    if (!dfa) {
      try {
        dfa = chainDfa(n);
      } catch (e) {
        if (e instanceof TooManyStatesError) throw new GrammarError('size', `a run of literals and classes is too long to enforce (${e.message})`);
        if (e instanceof EmptyLanguageError) throw new GrammarError('character class', 'a character class matches no character');
        throw e;
      }
      this.dfas.set(key, dfa);
    }
    return dfa;
  }
}

/** The DFA of a run of code point sets, then a repeated run (see the header: one edge set per state). */
function chainDfa(n: Chars): Dfa {
  const b = new DfaBuilder();
  let s = b.state();
  const step = (set: Ranges) => {
    const t = b.state();
    addUtf8(b, s, t, set);
    s = t;
  };
  if (n.optional) b.setAccepting(s);
  n.sets.forEach(step);
  if (!n.rep) b.setAccepting(s);
  else {
    const { sets, min, max } = n.rep;
    for (let i = 0; i < min; i++) sets.forEach(step);
    b.setAccepting(s);
    if (max === Infinity) {
      const loop = s;
      sets.forEach((set, k) => {
        const t = k === sets.length - 1 ? loop : b.state();
        addUtf8(b, s, t, set);
        s = t;
      });
    } else {
      for (let i = min; i < max; i++) {
        sets.forEach(step);
        b.setAccepting(s);
      }
    }
  }
  return b.build();
}
