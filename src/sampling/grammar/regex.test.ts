/**
 * regex.ts against JavaScript's own engine (the `u` flag), the reference for what a pattern
 * means: strings sampled from each DFA must match the RegExp, and random candidates (mutations
 * of matching strings, random strings over an alphabet with multibyte characters, quotes and
 * line terminators) must be accepted by the DFA exactly when the RegExp matches them.
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../util/rng.ts';
import { freshSeed } from '../../util/testing.ts';
import { DfaBuilder, EmptyLanguageError, intersect, type Dfa } from './dfa.ts';
import { compileRegex, minimize, RegexError, type RegexOptions } from './regex.ts';
import { sampleDfa } from './sample.testing.ts';

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }); // U+FEFF is \s: keep it

/** Patterns covering every supported construct, alone and combined. */
const PATTERNS = [
  'abc',
  'a|b|cd',
  '[a-z]+',
  '[^a-z]*',
  '[a-zA-Z_][a-zA-Z0-9_]{0,7}',
  '\\d{3}-\\d{4}',
  '\\D+',
  '\\w*\\W?',
  '\\s+\\S',
  '.{0,5}',
  '.+\\n',
  '[^]{2,4}',
  '[\\s\\S]',
  '[^\\n]*',
  '(ab|cd)*e',
  '(?:a(?:b|c)?)+',
  '(?<year>\\d{4})-(?<m>0[1-9]|1[0-2])',
  'x{2}y{1,}z{0,2}',
  'a*?b+?c??d{1,3}?',
  'a{0}b',
  'é+[à-ÿ]*',
  '😀|[😀-😂]{2}',
  '[\\u{1F600}-\\u{1F64F}]+',
  '\\uD83D\\uDE00+',
  '\\x41\\u0042\\u{43}\\t\\n\\r\\f\\v\\0',
  '\\cJ\\cj[\\cA-\\cZ]',
  '[\\-\\]\\\\.*\\b]+',
  '\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\/\\^\\$',
  '^(a|b)$',
  '^a|b$',
  '^^a$$',
  '[\\d\\s]+',
  '[^\\d\\s]+',
  '[\\w-]+',
  '[a-]|[-z]|[a-b-c]',
  '"[^"\\\\]*"',
  '[\\x00-\\x1f"\\\\]+',
  '[\\0-\\x7f]*[\\u0080-\\u07ff][\\u0800-\\uffff][\\u{10000}-\\u{10ffff}]',
  '[\\u007f\\u0080\\u07ff\\u0800\\ud7ff\\ue000\\uffff\\u{10000}\\u{10ffff}]+',
  '(a|ab)(c|bcd)(d*)',
  '((a|b)*c){2,3}',
  '()|a',
  '(?:[a-c]|[b-d])+',
  '\\p{L}+\\P{L}',
  '[\\p{Lu}\\d]{1,3}',
  '(x+x+)+y',
  '[\\u2028\\u2029.]+',
];

/** Characters the candidates are made of, beyond those of the pattern itself. */
const ALPHABET = [...'abcdexyzAZ059_- .@/"\\\n\r\t\u000b\u0000\u001f\u007f\u00a0\u2028éàÿß€😀😁😂𝄞'];

function encode(s: string, encoding: RegexOptions['encoding']): Uint8Array {
  return enc.encode(encoding === 'utf8' ? s : JSON.stringify(s));
}

/** The text a DFA sample stands for: decoded UTF-8, and in json-string mode a canonical JSON string. */
function decode(bytes: Uint8Array, encoding: RegexOptions['encoding']): string {
  const text = dec.decode(bytes);
  if (encoding === 'utf8') return text;
  const value: unknown = JSON.parse(text);
  if (typeof value !== 'string' || JSON.stringify(value) !== text) throw new Error(`not a canonical JSON string: ${text}`);
  return value;
}

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(0, xs.length)]!;
}

function mutate(rng: Rng, s: string, alphabet: readonly string[]): string {
  const cps = [...s];
  const edits = rng.int(1, 3);
  for (let k = 0; k < edits; k++) {
    const at = rng.int(0, cps.length + 1);
    const op = rng.int(0, 4);
    if (op === 0 || cps.length === 0) cps.splice(at, 0, pick(rng, alphabet));
    else if (op === 1) cps.splice(Math.min(at, cps.length - 1), 1);
    else if (op === 2) cps[Math.min(at, cps.length - 1)] = pick(rng, alphabet);
    else cps.splice(at, 0, ...cps.slice(rng.int(0, cps.length), rng.int(0, cps.length + 1))); // duplicate a run
  }
  return cps.join('');
}

function alphabetOf(pattern: string): string[] {
  return [...new Set([...ALPHABET, ...[...pattern].filter((c) => !'\\^$.*+?()[]{}|'.includes(c))])];
}

describe('compileRegex against RegExp (u flag)', () => {
  for (const encoding of ['utf8', 'json-string'] as const) {
    it(`agrees on ${PATTERNS.length} patterns (${encoding})`, () => {
      const seed = freshSeed();
      const rng = new Rng(seed);
      for (const pattern of PATTERNS) {
        const where = `pattern ${JSON.stringify(pattern)} (${encoding}), seed ${seed}`;
        const re = new RegExp(`^(?:${pattern})$`, 'u');
        const dfa = compileRegex(pattern, { encoding });
        const alphabet = alphabetOf(pattern);
        const matching: string[] = [];
        for (let k = 0; k < 150; k++) {
          const s = decode(sampleDfa(dfa, rng, 24), encoding);
          expect(re.test(s), `${where}: sample ${JSON.stringify(s)}`).toBe(true);
          matching.push(s);
        }
        const candidates: string[] = [];
        for (let k = 0; k < 300; k++) candidates.push(mutate(rng, pick(rng, matching), alphabet));
        for (let k = 0; k < 300; k++) candidates.push(Array.from({ length: rng.int(0, 7) }, () => pick(rng, alphabet)).join(''));
        let accepted = 0;
        for (const s of candidates) {
          const want = re.test(s);
          expect(dfa.matches(encode(s, encoding)), `${where}: candidate ${JSON.stringify(s)}`).toBe(want);
          if (want) accepted++;
        }
        // The mutations must reach both sides, or the check above proves little.
        expect(accepted, where).toBeLessThan(candidates.length);
      }
    });
  }

  it('search mode agrees with RegExp.prototype.test', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    for (const pattern of ['^a', 'b$', '\\d{2}', '^a|b$', '(?:^x)?y', '(?:^x|y)z$', '^$', '', 'é.😀', '(ab)+(?:c$)?']) {
      const where = `pattern ${JSON.stringify(pattern)} (search), seed ${seed}`;
      const re = new RegExp(pattern, 'u');
      for (const encoding of ['utf8', 'json-string'] as const) {
        const dfa = compileRegex(pattern, { encoding, match: 'search' });
        const alphabet = alphabetOf(pattern);
        const matching = Array.from({ length: 100 }, () => decode(sampleDfa(dfa, rng, 16), encoding));
        for (const s of matching) expect(re.test(s), `${where}: sample ${JSON.stringify(s)}`).toBe(true);
        for (let k = 0; k < 400; k++) {
          const s = k % 2 ? mutate(rng, pick(rng, matching), alphabet) : Array.from({ length: rng.int(0, 6) }, () => pick(rng, alphabet)).join('');
          expect(dfa.matches(encode(s, encoding)), `${where}: candidate ${JSON.stringify(s)}`).toBe(re.test(s));
        }
      }
    }
  });

  it('class escapes hold exactly the code points RegExp gives them', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const cps: number[] = [];
    for (let c = 0; c <= 0xffff; c++) if (c < 0xd800 || c > 0xdfff) cps.push(c);
    for (let k = 0; k < 3000; k++) cps.push(rng.int(0x10000, 0x110000));
    cps.push(0x10000, 0x10ffff);
    const bytes = new Uint8Array(4);
    for (const pattern of ['\\s', '\\S', '\\w', '\\W', '\\d', '\\D', '.', '[^]', '[^\\s]', '\\p{L}', '\\P{Nd}']) {
      const re = new RegExp(`^${pattern}$`, 'u');
      const dfa = compileRegex(pattern, { encoding: 'utf8' });
      for (const c of cps) {
        const n = enc.encodeInto(String.fromCodePoint(c), bytes).written;
        if (dfa.matches(bytes.subarray(0, n)) !== re.test(String.fromCodePoint(c))) {
          expect.fail(`${pattern}: U+${c.toString(16)} (seed ${seed})`);
        }
      }
    }
  });

  it('compiles a realistic pattern quickly', () => {
    const pattern = '[a-z0-9._%+-]{1,64}@[a-z0-9-]{1,63}(\\.[a-z0-9-]{1,63}){1,4}';
    for (const encoding of ['utf8', 'json-string'] as const) {
      const t0 = performance.now();
      const dfa = compileRegex(pattern, { encoding });
      const ms = performance.now() - t0;
      console.log(`email pattern (${encoding}): ${dfa.stateCount} states in ${ms.toFixed(1)} ms`);
      expect(ms).toBeLessThan(1000); // well under 100 ms on an idle machine; loose for shared ones
    }
  });
});

describe('refusals', () => {
  const refused: [string, string, number][] = [
    ['a(?=b)', '(?=', 1],
    ['(?!a)b', '(?!', 0],
    ['x(?<=a)b', '(?<=', 1],
    ['(?<!a)b', '(?<!', 0],
    ['(a)\\1', '\\1', 3],
    ['(a)(b)\\12', '\\12', 6],
    ['(?<n>a)\\k<n>', '\\k<n>', 7],
    ['a\\bc', '\\b', 1],
    ['a\\B', '\\B', 1],
    ['a^b', '^', 1],
    ['a$b', '$', 1],
    ['x(?:a|^b)', '^', 6],
    ['(^a)*', '^', 1],
    ['a(b$)+', '$', 3],
    ['(?i)a', '(?i)', 0],
    ['b(?i:a)', '(?i:', 1],
    ['(?-i:a)', '(?-i:', 0],
    ['(ab', '(', 0],
    ['a(b(c)', '(', 1],
    ['ab)', ')', 2],
    ['x[z-a]', 'z-a', 2],
    ['a{3,1}', '{3,1}', 1],
    ['a{1001}', '{1001}', 1],
    ['a{2,5000}', '{2,5000}', 1],
    ['[]', 'empty', 0],
    ['a[^\\s\\S]b', 'empty', 0],
    ['\\p{NotAProperty}', '\\p{NotAProperty}', 0],
    ['(a{1000}){1000}', 'size', 0],
    ['[ab]*a[ab]{16}', 'size', 0],
  ];
  for (const [pattern, construct, position] of refused) {
    it(`refuses ${JSON.stringify(pattern)} (${construct})`, () => {
      for (const encoding of ['utf8', 'json-string'] as const) {
        let err: unknown;
        try {
          compileRegex(pattern, { encoding });
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(RegexError);
        const r = err as RegexError;
        expect([r.construct, r.position]).toEqual([construct, position]);
        expect(r.message).toContain(construct === 'size' ? 'too many' : construct === 'empty' ? 'matches no string' : `"${construct}"`);
      }
    });
  }

  it('says what cannot be enforced and where', () => {
    expect(() => compileRegex('abcd(?=x)', { encoding: 'utf8' })).toThrow(
      'the regular expression construct "(?=" (look-ahead) at position 4 cannot be enforced by a finite automaton',
    );
  });

  it('refuses nesting deep enough to exhaust the stack', () => {
    const deep = `${'('.repeat(300)}a${')'.repeat(300)}`;
    expect(() => compileRegex(deep, { encoding: 'utf8' })).toThrow(RegexError);
    expect(compileRegex(`${'(?:'.repeat(100)}a${')'.repeat(100)}`, { encoding: 'utf8' }).matches(enc.encode('a'))).toBe(true);
  });

  it('rejects what RegExp rejects as syntax', () => {
    const invalid = ['*a', 'a**', 'a+*', '{', 'a{', 'a{1', '}', ']', 'a]', '\\', 'a|*', '[a', '\\c1', '\\x4', '\\u12', '\\u{110000}', '\\00', '\\q', '\\A', '[\\d-z]', '[a-\\w]', '(?<1a>x)', '(?', '(?x', '^*', '$+', 'a{2}{3}', '[\\B]'];
    for (const pattern of invalid) {
      expect(() => new RegExp(pattern, 'u'), pattern).toThrow(SyntaxError);
      expect(() => compileRegex(pattern, { encoding: 'utf8' }), pattern).toThrow(RegexError);
    }
  });

  it('accepts escaped ASCII punctuation outside classes, as other dialects write it', () => {
    const dfa = compileRegex('\\-\\@\\#\\:', { encoding: 'utf8' });
    expect(dfa.matches(enc.encode('-@#:'))).toBe(true);
    expect(() => compileRegex('a|[]', { encoding: 'utf8' })).not.toThrow();
  });
});

describe('json-string encoding', () => {
  /** Code points from every encoding class: escapes, ASCII, 2-, 3- and 4-byte UTF-8. */
  function randomText(rng: Rng, n: number): string {
    const pools: [number, number][] = [[0, 0x1f], [0x20, 0x7f], [0x22, 0x22], [0x5c, 0x5c], [0x80, 0x7ff], [0x800, 0xd7ff], [0xe000, 0xffff], [0x2028, 0x2029], [0x10000, 0x10ffff]];
    return Array.from({ length: n }, () => {
      const [l, h] = pick(rng, pools);
      return String.fromCodePoint(rng.int(l, h + 1));
    }).join('');
  }

  it('accepts exactly the canonical encoding of each string', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const any = compileRegex('[^]{0,30}', { encoding: 'json-string' });
    for (let k = 0; k < 2000; k++) {
      const s = randomText(rng, rng.int(0, 34));
      const json = JSON.stringify(s);
      const where = `${json} (seed ${seed})`;
      expect(any.matches(enc.encode(json)), where).toBe([...s].length <= 30);
      if ([...s].length > 30 || s.length === 0) continue;
      // Another valid JSON spelling of the same string, never accepted: the encoding is canonical.
      const cps = [...s];
      const at = rng.int(0, cps.length);
      const c = cps[at]!.codePointAt(0)!;
      const variants = [
        c < 0x10000 ? `\\u${c.toString(16).toUpperCase().padStart(4, '0')}` : undefined,
        c < 0x10000 ? `\\u${c.toString(16).padStart(4, '0')}` : undefined,
        c === 0x2f ? '\\/' : undefined,
        c < 0x20 ? String.fromCodePoint(c) : undefined, // a raw control character: not JSON at all
      ];
      for (const v of variants) {
        if (v === undefined) continue;
        const text = `"${cps.slice(0, at).map((x) => JSON.stringify(x).slice(1, -1)).join('')}${v}${cps.slice(at + 1).map((x) => JSON.stringify(x).slice(1, -1)).join('')}"`;
        if (text === json) continue;
        expect(any.matches(enc.encode(text)), `${text} for ${where}`).toBe(false);
      }
    }
    expect(any.matches(enc.encode('abc'))).toBe(false); // unquoted
    expect(any.matches(enc.encode('"abc'))).toBe(false);
  });

  it('matches quotes, backslashes and control characters by their decoded value', () => {
    const dfa = compileRegex('"[^"\\\\]*"\\\\[\\n\\t\\x00-\\x02]\\u00e9', { encoding: 'json-string' });
    expect(dfa.matches(enc.encode(JSON.stringify('"a b"\\\n\u00e9')))).toBe(true);
    expect(dfa.matches(enc.encode(JSON.stringify('"a\\b"\\\u0001\u00e9')))).toBe(false);
    expect(dfa.matches(enc.encode(JSON.stringify('""\\\u0001é')))).toBe(true);
    expect(dfa.matches(enc.encode('"\\"\\"\\\\\\u0001é"'))).toBe(true);
    expect(dfa.matches(enc.encode('"\\"\\"\\\\\\u0001\\u00e9"'))).toBe(false);
  });

  it('intersects with a length bound to exactly the strings of both', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const bound = compileRegex('[^]{2,5}', { encoding: 'json-string' });
    for (const pattern of ['[a-c"\\\\]*', '(é|\\n|😀)+x?', '\\w+\\s?\\W*']) {
      const re = new RegExp(`^(?:${pattern})$`, 'u');
      const dfa = intersect(compileRegex(pattern, { encoding: 'json-string' }), bound);
      const alphabet = alphabetOf(pattern);
      for (let k = 0; k < 500; k++) {
        const s = Array.from({ length: rng.int(0, 8) }, () => pick(rng, alphabet)).join('');
        const n = [...s].length;
        expect(dfa.matches(encode(s, 'json-string')), `${pattern}: ${JSON.stringify(s)} (seed ${seed})`).toBe(re.test(s) && n >= 2 && n <= 5);
      }
    }
  });
});

describe('minimize', () => {
  /** The number of states of the minimal DFA, by naive refinement (Moore), as the reference. */
  function mooreCount(dfa: Dfa, alphabet: readonly number[]): number {
    const n = dfa.stateCount;
    const step = (s: number, b: number) => (s === n ? n : dfa.next(s, b) < 0 ? n : dfa.next(s, b));
    let cls: number[] = Array.from({ length: n + 1 }, (_, s) => (s < n && dfa.accepting[s] ? 1 : 0));
    for (;;) {
      const sig = new Map<string, number>();
      const next = cls.map((_, s) => {
        const key = [cls[s], ...alphabet.map((b) => cls[step(s, b)])].join(',');
        if (!sig.has(key)) sig.set(key, sig.size);
        return sig.get(key)!;
      });
      if (new Set(next).size === new Set(cls).size) return new Set(next).size - 1; // less the dead class
      cls = next;
    }
  }

  it('gives the minimal automaton of the same language', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const alphabet = [0x61, 0x62, 0x63, 0xe9];
    let tried = 0;
    while (tried < 100) {
      const b = new DfaBuilder();
      const n = rng.int(1, 12);
      for (let s = 0; s < n; s++) b.state(rng.next() < 0.3);
      for (let s = 0; s < n; s++) {
        // 'a'..'c' may share a target (a range) or not; 0xe9 stands for the rest of the bytes.
        if (rng.next() < 0.5) b.edge(s, 0x61, 0x62, rng.int(0, n));
        else for (const x of [0x61, 0x62]) if (rng.next() < 0.8) b.edge(s, x, x, rng.int(0, n));
        if (rng.next() < 0.7) b.edge(s, 0x63, 0x63, rng.int(0, n));
        if (rng.next() < 0.3) b.edge(s, 0xe0, 0xef, rng.int(0, n));
      }
      let dfa: Dfa;
      try {
        dfa = b.build();
      } catch (e) {
        if (e instanceof EmptyLanguageError) continue;
        throw e;
      }
      tried++;
      const min = minimize(dfa);
      expect(min.stateCount, `seed ${seed}`).toBe(mooreCount(dfa, alphabet));
      // Same language: every string up to length 5 over the alphabet.
      let layer: number[][] = [[]];
      for (let len = 0; len <= 5; len++) {
        for (const w of layer) expect(min.matches(Uint8Array.from(w)), `seed ${seed}: ${w}`).toBe(dfa.matches(Uint8Array.from(w)));
        layer = layer.flatMap((w) => alphabet.map((x) => [...w, x]));
      }
    }
  });
});
