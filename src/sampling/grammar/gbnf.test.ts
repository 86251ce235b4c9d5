/**
 * GBNF parsing (gbnf.ts), checked through the grammar's language rather than its shape: strings
 * sampled from each grammar must be recognized, and on candidates (samples, their mutations,
 * random strings) recognize() must agree with an independent oracle: an equivalent JavaScript
 * RegExp for the regular grammars, JSON.parse for JSON, small hand-written checkers for the
 * others. recognize() and the sampler (grammar.testing.ts) know nothing of GBNF.
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../util/rng.ts';
import { freshSeed } from '../../util/testing.ts';
import { parseGbnf } from './gbnf.ts';
import { GrammarError, type Grammar } from './grammar.ts';
import { recognize, sampleGrammar } from './grammar.testing.ts';

const enc = new TextEncoder();
const strict = new TextDecoder('utf-8', { fatal: true });
const loose = new TextDecoder();

/** The text of `bytes`, or null when they are not well-formed UTF-8 (a grammar never matches those). */
function text(bytes: Uint8Array): string | null {
  try {
    return strict.decode(bytes);
  } catch {
    return null;
  }
}

const JSON_GBNF = String.raw`
# JSON text (RFC 8259)
root    ::= ws value ws
value   ::= object | array | string | number | ("true" | "false" | "null")
object  ::= "{" ws ( member ( ws "," ws member )* ws )? "}"
member  ::= string ws ":" ws value
array   ::= "[" ws ( value ( ws "," ws value )* ws )? "]"
string  ::= "\"" char* "\""
char    ::= [^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
number  ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
ws      ::= [ \t\n\r]*
`;

/** Arithmetic without spaces, and its recursive-descent recognizer. */
const ARITHMETIC_GBNF = String.raw`
root   ::= expr
expr   ::= term (("+" | "-") term)*
term   ::= factor (("*" | "/") factor)*
factor ::= number | "(" expr ")" | "-" factor
number ::= [0-9]+ ("." [0-9]+)?
`;

function isArithmetic(s: string): boolean {
  let i = 0;
  const digits = () => {
    const start = i;
    while (i < s.length && s[i]! >= '0' && s[i]! <= '9') i++;
    return i > start;
  };
  const factor = (): boolean => {
    if (s[i] === '-') {
      i++;
      return factor();
    }
    if (s[i] === '(') {
      i++;
      if (!expr() || s[i] !== ')') return false;
      i++;
      return true;
    }
    if (!digits()) return false;
    if (s[i] === '.') {
      i++;
      return digits();
    }
    return true;
  };
  const chain = (item: () => boolean, ops: string) => {
    if (!item()) return false;
    while (i < s.length && ops.includes(s[i]!)) {
      i++;
      if (!item()) return false;
    }
    return true;
  };
  const term = () => chain(factor, '*/');
  const expr = (): boolean => chain(term, '+-');
  return expr() && i === s.length;
}

function isBalanced(s: string): boolean {
  const stack: string[] = [];
  for (const c of s) {
    if (c === '(' || c === '[') stack.push(c === '(' ? ')' : ']');
    else if (c !== stack.pop()) return false;
  }
  return stack.length === 0;
}

const SAN = '(?:[KQRBN](?:[a-h]|[1-8]|[a-h][1-8])?x?[a-h][1-8]|(?:[a-h]x)?[a-h][1-8](?:=[QRBN])?|O-O|O-O-O)[+#]?';

interface Case {
  name: string;
  gbnf: string;
  start?: string;
  /** The membership oracle, on the decoded text. */
  oracle: (s: string) => boolean;
  /** Characters for random candidates (besides random bytes). */
  alphabet: string;
  yes?: string[];
  no?: string[];
  maxDepth?: number;
}

const regex = (re: RegExp) => (s: string) => re.test(s);

const CASES: Case[] = [
  {
    name: 'arithmetic',
    gbnf: ARITHMETIC_GBNF,
    oracle: isArithmetic,
    alphabet: '0123456789.+-*/()',
    yes: ['1', '-1.5', '(1+2)*3', '--(4)/2.0-7', '((((1))))'],
    no: ['', '1+', '(1', '1.', '.5', '1++2', '()'],
  },
  {
    name: 'JSON',
    gbnf: JSON_GBNF,
    oracle: (s) => {
      try {
        JSON.parse(s);
        return true;
      } catch {
        return false;
      }
    },
    alphabet: '{}[]":,. \n-+eE0123456789truefalsn\\u/aé😀\t',
    yes: ['{}', ' [1, -0.5e+3, "a\\u00e9\\n", true, null, {"k": []}] ', '"😀"', '0'],
    no: ['', '{', '01', '[1,]', '{"a"}', '"\\x41"', "'a'", '"\t"', 'nul'],
  },
  {
    name: 'list of items',
    gbnf: 'root ::= ("- " item)+\nitem ::= [^\\n]+ "\\n"',
    oracle: regex(/^(?:- [^\n]+\n)+$/u),
    alphabet: '- \nab😀',
    yes: ['- a\n', '- a b\n- - \n'],
    no: ['', '- \n', '- a', 'a\n'],
  },
  {
    name: 'chess moves',
    gbnf: String.raw`
      # numbered moves in standard algebraic notation, one full move a line
      root      ::= turn{1,3}
      turn      ::= num ". " san (" " san)? "\n"
      num       ::= [1-9] [0-9]{0,2}
      san       ::= (piece from? capture? square | pawn-move | "O-O" | "O-O-O") check?
      piece     ::= [KQRBN]
      from      ::= [a-h] | [1-8] | [a-h] [1-8]
      capture   ::= "x"
      square    ::= [a-h] [1-8]
      pawn-move ::= ([a-h] "x")? square promo?
      promo     ::= "=" [QRBN]
      check     ::= "+" | "#"
    `,
    oracle: regex(new RegExp(`^(?:[1-9][0-9]{0,2}\\. ${SAN}(?: ${SAN})?\\n){1,3}$`, 'u')),
    alphabet: '123. KQRBNabhx18=O-+#\n',
    yes: ['1. e4 e5\n', '12. Nbxd7+ O-O-O#\n13. exd8=Q\n'],
    no: ['1. e9\n', '0. e4\n', '1. e4 e5 d4\n'],
  },
  {
    name: 'nested brackets',
    gbnf: 'root ::= group*\ngroup ::= "(" root ")" | "[" root "]"',
    oracle: isBalanced,
    alphabet: '()[]',
    yes: ['', '()', '([])[]', '(((([]))))'],
    no: ['(', ')(', '([)]'],
    maxDepth: 20,
  },
  {
    name: 'unicode and negated classes',
    gbnf: String.raw`root ::= [^a-z\n]{1,3} [é-ü] "🎉"+ [\u0100-\U0001F000]? [^\x00-\x7F]`,
    oracle: regex(/^[^a-z\n]{1,3}[é-ü](?:🎉)+[\u{100}-\u{1F000}]?[^\x00-\x7F]$/u),
    alphabet: 'aAz\n1éüöÿ🎉Ā中😀\u{1F001}\u{10FFFF}',
    yes: ['Aé🎉é', 'ÿÿÿü🎉🎉中😀'],
    no: ['aé🎉é', 'Aé🎉a', 'Aé🎉'],
  },
  {
    name: 'any code point',
    gbnf: 'root ::= (\n  "<" .{0,4} ">"\n  | "(" [^)]* ")"   # a comment inside the group\n) .?',
    oracle: regex(/^(?:<.{0,4}>|\([^)]*\)).?$/su),
    alphabet: '<>()\na😀',
    yes: ['<>', '<\n\n>😀', '(a(b)'],
    no: ['<abcde>', '(a)b)'],
  },
  {
    name: 'literals with escapes',
    gbnf: String.raw`root ::= "tab\there" | "nl\n" | "q\"\\" | "\x41\u00e9\U0001F600" | "\[\]" | [\x30-\x32\]\[\\] "\r"`,
    oracle: regex(/^(?:tab\there|nl\n|q"\\|Aé😀|\[\]|[0-2\]\[\\]\r)$/u),
    alphabet: 'tabhernl\n\t"\\qAé😀[]012\r',
    yes: ['tab\there', 'q"\\', 'Aé😀', '[]', ']\r', '\\\r'],
    no: ['tab\\there', 'A', '3\r'],
  },
  {
    name: 'every repetition form',
    gbnf: 'root ::= "a"* "b"+ "c"? "d"{2} "e"{1,3} "f"{2,} ("gh"){0,2} ("x" | "yz"){1,2} [0-9]{3} item{0,2} item+\nitem ::= "<" [pq]? ">"',
    oracle: regex(/^a*b+c?d{2}e{1,3}f{2,}(?:gh){0,2}(?:x|yz){1,2}[0-9]{3}(?:<[pq]?>){0,2}(?:<[pq]?>)+$/u),
    alphabet: 'abcdefghxyz09<>pq',
    yes: ['bddeffx000<>', 'aabbcddeeefffghghyzx123<p><q><>'],
    no: ['ddeffx000<>', 'bddeffx00<>', 'bddeeeeffx000<>'],
  },
  {
    name: 'repetition of empty-capable items',
    gbnf: 'root ::= ("a"? "b"?)* "c" ws+ (ws ws)* ("" | "d")* e{2,4} "f" (e | ws)+ g*\nws ::= " "?\ne ::= ("x" | )\ng ::= ""',
    oracle: regex(/^(?:a?b?)*c(?: ?)+(?: ? ?)*d*(?:x?){2,4}f(?:x?| ?)+$/u),
    alphabet: 'abcdfx ',
    yes: ['cf', 'abbac  dxxxf x ', 'bcxf'],
    no: ['', 'cxxxxxf', 'c f y'],
  },
  {
    name: 'empty alternatives, comments and continued lines',
    gbnf: '# leading comment\n\nroot ::=\n    "a" b   # comment after\n    "c"\n  | "d" |\nx ::= | "q"\nb ::= "b" | x\n',
    oracle: regex(/^(?:a(?:b|q|)c|d|)$/u),
    alphabet: 'abcdq',
    yes: ['', 'ac', 'abc', 'aqc', 'd'],
    no: ['a', 'abqc'],
  },
  {
    name: 'large bounds',
    gbnf: 'root ::= [a-c]{0,1000} "." ("ab" | "c"){2,50} ("x" sub){0,30}\nsub ::= "y" | "z" sub',
    oracle: regex(/^[a-c]{0,1000}\.(?:ab|c){2,50}(?:xz*y){0,30}$/u),
    alphabet: 'abc.xyz',
    yes: [`${'a'.repeat(1000)}.cc`, `.${'ab'.repeat(50)}xyxzzy`],
    no: [`${'a'.repeat(1001)}.cc`, `.${'ab'.repeat(51)}`],
    maxDepth: 60,
  },
  {
    name: 'rule names and mutual recursion',
    gbnf: 'root ::= my-rule_1\nmy-rule_1 ::= "a" Rule2 | "b"\nRule2 ::= "c" my-rule_1',
    oracle: regex(/^(?:ac)*b$/u),
    alphabet: 'abc',
    yes: ['b', 'acacb'],
    no: ['', 'ab', 'acac'],
    maxDepth: 30,
  },
  {
    name: 'stacked postfix operators',
    gbnf: 'root ::= ("a"+)? ("b"{1,2})* "c"{0} ([de]{2}?)+ "f"?',
    oracle: regex(/^(?:a+)?(?:b{1,2})*(?:(?:[de]{2})?)+f?$/u),
    alphabet: 'abcdef',
    yes: ['', 'aaabbb', 'dedd', 'f'],
    no: ['c', 'ded'],
  },
  {
    name: 'another start rule',
    gbnf: 'root ::= "r"\nother ::= "o"{1,3} root?',
    start: 'other',
    oracle: regex(/^o{1,3}r?$/u),
    alphabet: 'or',
    yes: ['o', 'ooor'],
    no: ['r', ''],
  },
];

/** A random edit of `bytes`: delete, insert or replace a byte, or splice in a character of the alphabet. */
function mutate(bytes: Uint8Array, alphabet: string[], rng: Rng): Uint8Array {
  const a = [...bytes];
  const at = rng.int(0, a.length + 1);
  switch (rng.int(0, 4)) {
    case 0:
      a.splice(at, 1);
      break;
    case 1:
      a.splice(at, 0, rng.int(0, 256));
      break;
    case 2:
      a.splice(at, 1, rng.int(0, 256));
      break;
    default:
      a.splice(at, rng.int(0, 2), ...enc.encode(alphabet[rng.int(0, alphabet.length)]!));
  }
  return Uint8Array.from(a);
}

function randomText(alphabet: string[], rng: Rng): Uint8Array {
  let s = '';
  for (let n = rng.int(0, 14); n > 0; n--) s += alphabet[rng.int(0, alphabet.length)]!;
  return enc.encode(s);
}

/** The end positions reachable from each start position: a language over code points, evaluated directly. */
type Lang = (cps: readonly number[], starts: ReadonlySet<number>) => Set<number>;

/** x{m,n} (n = Infinity for an open bound) of a language, by iterating it: `x` maps each start alone, so unions distribute. */
function repeatLang(x: Lang, m: number, n: number): Lang {
  return (cps, starts) => {
    let cur = new Set(starts);
    for (let k = 0; k < m; k++) cur = x(cps, cur);
    const out = new Set(cur);
    let frontier = cur;
    for (let k = m; k < n && frontier.size > 0; k++) {
      const next = new Set([...x(cps, frontier)].filter((p) => n !== Infinity || !out.has(p)));
      next.forEach((p) => out.add(p));
      frontier = next;
    }
    return out;
  };
}

/**
 * A random GBNF grammar without recursion (literals, classes and negated classes, `.`, groups
 * with empty alternatives, references to helper rules, every postfix form, stacked), with its
 * language as a direct evaluation over code points: an oracle that shares nothing with gbnf.ts
 * and, unlike a backtracking RegExp, stays polynomial under nested quantifiers.
 */
function randomRegularGrammar(rng: Rng): { gbnf: string; matches: (s: string) => boolean } {
  const chars = ['a', 'b', 'c', 'é', '😀', '\n', '"'];
  const gbnfChar = (c: string) => (c === '\n' ? '\\n' : c === '"' ? '\\"' : c);
  const rules: { name: string; gbnf: string; lang: Lang }[] = [];
  type Expr = { gbnf: string; lang: Lang };
  const oneChar = (ok: (cp: number) => boolean): Lang => (cps, starts) => new Set([...starts].filter((p) => p < cps.length && ok(cps[p]!)).map((p) => p + 1));
  const expr = (depth: number, level: number): Expr => {
    let atom: Expr;
    const kind = rng.int(0, depth > 0 ? 6 : 4);
    const later = rules.filter((r) => r.name > `r${level}`);
    if (kind === 0) {
      const lit = Array.from({ length: rng.int(0, 3) }, () => chars[rng.int(0, chars.length)]!);
      const want = lit.map((c) => c.codePointAt(0)!);
      atom = {
        gbnf: `"${lit.map(gbnfChar).join('')}"`,
        lang: (cps, starts) => new Set([...starts].filter((p) => want.every((cp, k) => cps[p + k] === cp)).map((p) => p + want.length)),
      };
    } else if (kind === 1) {
      const set = chars.filter(() => rng.next() < 0.4);
      if (set.length === 0) set.push('a');
      const negated = rng.next() < 0.3;
      const members = new Set(set.map((c) => c.codePointAt(0)!));
      atom = { gbnf: `[${negated ? '^' : ''}${set.map((c) => (c === '"' ? '"' : gbnfChar(c))).join('')}]`, lang: oneChar((cp) => members.has(cp) !== negated) };
    } else if (kind === 2) {
      atom = { gbnf: '.', lang: oneChar(() => true) };
    } else if (kind === 3 && later.length > 0) {
      const r = later[rng.int(0, later.length)]!;
      atom = { gbnf: r.name, lang: r.lang };
    } else {
      const alts = Array.from({ length: rng.int(1, 4) }, () => seq(depth - 1, level));
      atom = {
        gbnf: `(${alts.map((a) => a.gbnf).join(' | ')})`,
        lang: (cps, starts) => {
          const out = new Set<number>();
          for (const a of alts) a.lang(cps, starts).forEach((p) => out.add(p));
          return out;
        },
      };
    }
    for (let k = rng.int(0, 3); k > 0; k--) {
      const m = rng.int(0, 3);
      const n = m + rng.int(0, 3);
      const [op, lo, hi] = ([['*', 0, Infinity], ['+', 1, Infinity], ['?', 0, 1], [`{${m}}`, m, m], [`{${m},}`, m, Infinity], [`{${m},${n}}`, m, n]] as const)[rng.int(0, 6)]!;
      atom = { gbnf: `${atom.gbnf}${op}`, lang: repeatLang(atom.lang, lo, hi) };
    }
    return atom;
  };
  const seq = (depth: number, level: number): Expr => {
    const items = Array.from({ length: rng.int(0, 4) }, () => expr(depth, level));
    return {
      gbnf: items.map((i) => i.gbnf).join(' '),
      lang: (cps, starts) => items.reduce<Set<number>>((cur, i) => i.lang(cps, cur), new Set(starts)),
    };
  };
  // Helper rules first, each using only the ones after it (r2, then r1), then root.
  for (let level = 2; level >= 1; level--) rules.unshift({ name: `r${level}`, ...seq(2, level) });
  const root = seq(3, 0);
  return {
    gbnf: [`root ::= ${root.gbnf}`, ...rules.map((r) => `${r.name} ::= ${r.gbnf}`)].join('\n'),
    matches: (s) => {
      const cps = Array.from(s, (c) => c.codePointAt(0)!);
      return root.lang(cps, new Set([0])).has(cps.length);
    },
  };
}

describe('parseGbnf', () => {
  for (const c of CASES) {
    it(`${c.name}: sampled strings are recognized, and recognize() agrees with the oracle`, () => {
      const seed = freshSeed();
      const rng = new Rng(seed);
      const g = parseGbnf(c.gbnf, c.start);
      const accepts = (b: Uint8Array) => {
        const s = text(b);
        return s !== null && c.oracle(s);
      };
      for (const s of c.yes ?? []) expect(recognize(g, enc.encode(s)), `${c.name}: ${JSON.stringify(s)} should match`).toBe(true);
      for (const s of c.no ?? []) expect(recognize(g, enc.encode(s)), `${c.name}: ${JSON.stringify(s)} should not match`).toBe(false);
      const alphabet = [...c.alphabet];
      const samples: Uint8Array[] = [];
      for (let i = 0; i < 150; i++) {
        const b = sampleGrammar(g, rng, c.maxDepth);
        samples.push(b);
        const shown = JSON.stringify(loose.decode(b));
        expect(recognize(g, b), `seed ${seed}: sample ${shown} of ${c.name} is not recognized`).toBe(true);
        expect(accepts(b), `seed ${seed}: sample ${shown} of ${c.name} fails the oracle`).toBe(true);
      }
      const candidates = [...samples.flatMap((b) => [mutate(b, alphabet, rng), mutate(mutate(b, alphabet, rng), alphabet, rng)])];
      for (let i = 0; i < 300; i++) candidates.push(randomText(alphabet, rng));
      let positives = 0;
      for (const b of candidates) {
        const want = accepts(b);
        if (want) positives++;
        expect(recognize(g, b), `seed ${seed}: ${c.name} on ${JSON.stringify(loose.decode(b))} (bytes ${[...b].join(',')})`).toBe(want);
      }
      // The candidates must probe both sides of the language to mean anything.
      expect(positives, `seed ${seed}`).toBeGreaterThan(0);
      expect(positives, `seed ${seed}`).toBeLessThan(candidates.length);
    });
  }

  it('random regular grammars agree with a direct evaluation of their language', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const alphabet = ['a', 'b', 'c', 'é', '😀', '\n', '"'];
    let tested = 0;
    for (let round = 0; round < 100; round++) {
      const { gbnf, matches } = randomRegularGrammar(rng);
      const where = `seed ${seed}, round ${round}: ${JSON.stringify(gbnf)}`;
      const g = parseGbnf(gbnf);
      // Stacked bounded repetitions can make hundreds of rules, which the recognizer is slow on.
      if (g.size > 150) continue;
      tested++;
      const candidates: Uint8Array[] = [];
      for (let i = 0; i < 25; i++) {
        const b = sampleGrammar(g, rng, 8);
        // Earley is cubic on grammars this ambiguous: keep the strings short.
        if (b.length > 24) continue;
        expect(recognize(g, b), `${where}: sample ${JSON.stringify(loose.decode(b))}`).toBe(true);
        candidates.push(b, mutate(b, alphabet, rng));
      }
      for (let i = 0; i < 40; i++) candidates.push(randomText(alphabet, rng));
      for (const b of candidates) {
        const s = text(b);
        expect(recognize(g, b), `${where}: on ${JSON.stringify(loose.decode(b))}`).toBe(s !== null && matches(s));
      }
    }
    expect(tested, `seed ${seed}`).toBeGreaterThan(70);
  });

  it('samples of varied length and depth come out', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const g = parseGbnf(JSON_GBNF);
    const lengths = Array.from({ length: 300 }, () => sampleGrammar(g, rng, 16).length);
    expect(Math.max(...lengths), `seed ${seed}`).toBeGreaterThan(40);
    expect(Math.min(...lengths), `seed ${seed}`).toBeLessThanOrEqual(2);
  });

  it('bounded repetition grows the grammar linearly', () => {
    const g = parseGbnf('root ::= ("a" | "bc"){0,1000} x{3,1000}\nx ::= "x" | "y" x');
    expect(g.size).toBeLessThan(2100);
    expect(recognize(g, enc.encode('a'.repeat(1000) + 'xxx'))).toBe(true);
    expect(recognize(g, enc.encode('a'.repeat(1001) + 'xxx'))).toBe(false);
    expect(recognize(g, enc.encode('bc'.repeat(10) + 'x'.repeat(1000)))).toBe(true);
    expect(recognize(g, enc.encode('x'.repeat(1001)))).toBe(false);
  });

  it('joins runs of literals and classes into single terminals', () => {
    const g = parseGbnf('root ::= "ab" [0-9] "c" [x-z]+ "-"? ("q" | "r") [0-9a-f]{4}');
    // "ab" [0-9] "c" [x-z]+  |  "-"?  |  [qr] [0-9a-f]{4}
    expect(g.rules[g.root]!.alts[0]!.map((s) => (s.dfa ? 't' : 'r')).join('')).toBe('ttt');
    expect(recognize(g, enc.encode('ab5cxyz-q0a9f'))).toBe(true);
    expect(recognize(g, enc.encode('ab5cr0a9f'))).toBe(false);
  });

  it('parses a long JSON grammar quickly', () => {
    // A schema-derived grammar like the ones llama.cpp's converter writes, with many rules.
    const lines = [JSON_GBNF, 'space ::= | " " | "\\n" [ \\t]{0,20}', 'str ::= "\\"" char{0,200} "\\"" space'];
    const top: string[] = [];
    for (let i = 0; i < 150; i++) {
      lines.push(`obj-${i} ::= "{" space obj-${i}-a-kv "," space obj-${i}-b-kv ( "," space obj-${i}-c-kv )? "}" space`);
      lines.push(`obj-${i}-a-kv ::= "\\"name_${i}\\"" space ":" space str`);
      lines.push(`obj-${i}-b-kv ::= "\\"count\\"" space ":" space ([0-9] | [1-9] [0-9]{1,15}) space`);
      lines.push(`obj-${i}-c-kv ::= "\\"items\\"" space ":" space "[" space ( value ( "," space value ){0,9} )? "]" space # optional`);
      top.push(`obj-${i}`);
    }
    lines.push(`root-any ::= ${top.join(' | ')}`);
    const text = lines.join('\n');
    const time = (src: string, start?: string) => {
      parseGbnf(src, start); // warm-up: the first run pays for compiling the parser itself
      const runs: number[] = [];
      for (let k = 0; k < 5; k++) {
        const t0 = performance.now();
        parseGbnf(src, start);
        runs.push(performance.now() - t0);
      }
      return Math.min(...runs);
    };
    const small = time(JSON_GBNF);
    const large = time(text, 'root-any');
    const g = parseGbnf(text, 'root-any');
    console.log(`parseGbnf: JSON grammar (${JSON_GBNF.length} chars) ${small.toFixed(2)} ms; long grammar (${text.length} chars, ${g.size} rules) ${large.toFixed(2)} ms`);
    expect(recognize(g, enc.encode('{"name_7": "x", "count": 12, "items": [1, {"a": null}]}'))).toBe(true);
    expect(large).toBeLessThan(1000); // generous: the target (< 50 ms) is reported above, not asserted
  });

  it('refuses bad grammars with GrammarError naming the problem and where it is', () => {
    const cases: [string, RegExp][] = [
      ['root ::= item', /rule "item" is used but never defined, at line 1, column 10/],
      ['start ::= "a"', /no "root" rule/],
      ['', /no "root" rule/],
      ['root ::= "abc', /unterminated string literal at line 1, column 10/],
      ['root ::= "a"\nx ::= [a-z', /unterminated character class at line 2, column 7/],
      ['root ::= "\\q"', /unknown escape "\\q" in a string literal at line 1, column 11/],
      ['root ::= [\\d]', /unknown escape "\\d" in a character class/],
      ['root ::= "\\x4"', /"\\x" needs 2 hex digits at line 1, column 11/],
      ['root ::= "\\u12G4"', /"\\u" needs 4 hex digits/],
      ['root ::= "\\U00110000"', /beyond U\+10FFFF/],
      ['root ::= "\\uD800"', /surrogate/],
      ['root ::= [z-a]', /range U\+007A-U\+0061 is reversed at line 1, column 12/],
      ['root ::= []', /character class matches no character at line 1, column 10/],
      ['root ::= [^\\x00-\\U0010FFFF]', /matches no character/],
      ['root ::= "a"{3,2}', /repetition \{3,2\} has its maximum below its minimum at line 1, column 13/],
      ['root ::= "a"{1001}', /exceeds the limit of 1000/],
      ['root ::= "a"{2,5000}', /exceeds the limit of 1000/],
      ['root ::= "a"{,3}', /expected a number after "\{"/],
      ['root ::= "a"{2', /expected "\}" to close the repetition/],
      ['root ::= "a" | *"b"', /"\*" has nothing to repeat at line 1, column 16/],
      ['root ::= <[1234]>', /token references .* not supported.* at line 1, column 10/],
      ['root ::= "a" <think>', /token references/],
      ['root ::= !<x>', /token references/],
      ['root ::= ("a" | "b"', /"\(" is never closed/],
      ['root ::= ("a"\nx ::= "b"', /"\(" is never closed before the next rule at line 1, column 10/],
      ['root ::= "a")', /"\)" without a matching "\(" at line 1, column 13/],
      ['root ::= "a" x ::= "b"', /a rule must start on a new line/],
      ['root "a"', /expected "::=" after the rule name "root"/],
      ['"a" ::= root', /expected a rule name, found "\\""/],
      ['root ::= \'a\'', /double quotes/],
      ['root ::= "a" ; "b"', /unexpected ";" at line 1, column 14/],
      ['root ::= "a"\nroot ::= "b"', /rule "root" is defined twice \(first at line 1, column 1\), again at line 2, column 1/],
      ['root ::= expr\nexpr ::= expr "+" term | term\nterm ::= [0-9]', /rule "expr" is left-recursive \(expr -> expr\).*\(rule "expr" is defined at line 2, column 1\)/],
      ['root ::= a\na ::= b "x" | "y"\nb ::= "z"? a', /left-recursive \(a -> b -> a\)/],
      ['root ::= root "a"', /can never finish/],
    ];
    for (const [src, message] of cases) {
      let error: unknown;
      try {
        parseGbnf(src);
      } catch (e) {
        error = e;
      }
      expect(error, `${JSON.stringify(src)} should be refused`).toBeInstanceOf(GrammarError);
      expect((error as GrammarError).message, JSON.stringify(src)).toMatch(message);
    }
  });

  it('accepts what llama.cpp accepts around whitespace', () => {
    const g: Grammar = parseGbnf('root::="a"   # no spaces around ::=\r\n\r\nb ::= "b"  \t\n  # trailing comment');
    expect(recognize(g, enc.encode('a'))).toBe(true);
    const h = parseGbnf('root ::= "a" |\n  "b" |\n  "c" ( "d"\n  "e" )\n');
    expect(['a', 'b', 'cde'].every((s) => recognize(h, enc.encode(s)))).toBe(true);
    expect(recognize(h, enc.encode('c'))).toBe(false);
  });
});
