/**
 * numberDfa against exact references: the JSON number grammar (a regex within the digit limits)
 * when unbounded; with bounds, JSON.parse and the double comparisons a validator makes, exact
 * decimal multipleOf (BigInt on the text's digits) and ajv. Random bound combinations each run:
 * texts sampled from the automaton must all validate, and candidates around the bounds must be
 * accepted exactly when they validate and follow the format rule.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import { describe, expect, it } from 'vitest';
import { Rng } from '../../util/rng.ts';
import { freshSeed } from '../../util/testing.ts';
import { MAX_DFA_STATES, type Dfa } from './dfa.ts';
import {
  MAX_EXACT_INTEGER,
  MAX_EXP_DIGITS,
  MAX_FRAC_DIGITS,
  MAX_INT_DIGITS,
  MAX_SIGNIFICANT_DIGITS,
  NumberBoundsError,
  numberDfa,
  type NumberBounds,
} from './numbers.ts';
import { sampleDfa } from './sample.testing.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const accepts = (dfa: Dfa, text: string) => dfa.matches(enc.encode(text));

// ajv's own multipleOf divides in floating point; with a tolerance it agrees with exact decimals
// while the quotient is small enough for 1e-9 to cover the rounding of x / m.
const ajv = new Ajv({ multipleOfPrecision: 9 });

const INT = `-?(0|[1-9][0-9]{0,${MAX_INT_DIGITS - 1}})`;
const FRAC = `(\\.[0-9]{1,${MAX_FRAC_DIGITS}})`;
const EXPONENT = `([eE][+-]?[0-9]{1,${MAX_EXP_DIGITS}})`;
const JSON_INTEGER = new RegExp(`^${INT}$`);
const JSON_NUMBER = new RegExp(`^${INT}${FRAC}?${EXPONENT}?$`);
const PLAIN_NUMBER = new RegExp(`^${INT}${FRAC}?$`);

type Keyword = 'minimum' | 'maximum' | 'exclusiveMinimum' | 'exclusiveMaximum' | 'multipleOf';
const BOUND_KEYWORDS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'] as const;

// --- exact decimal references ----------------------------------------------------------------

/** A JS number text (String(v), maybe with an exponent) as plain decimal digits, normalized. */
function plain(text: string): string {
  const neg = text.startsWith('-');
  const [m, e = '0'] = text.replace(/^-/, '').split(/[eE]/) as [string, string | undefined];
  const [ip, fp = ''] = m.split('.') as [string, string | undefined];
  return decText((neg ? -1n : 1n) * BigInt(ip + fp), fp.length - Number(e));
}

/** N * 10^-scale as a plain decimal text, normalized (scale may be negative). */
function decText(n: bigint, scale: number): string {
  if (scale < 0) return decText(n * 10n ** BigInt(-scale), 0);
  const neg = n < 0n;
  const digits = (neg ? -n : n).toString().padStart(scale + 1, '0');
  const ip = digits.slice(0, digits.length - scale);
  const fp = digits.slice(digits.length - scale).replace(/0+$/, '');
  const body = fp ? `${ip}.${fp}` : ip;
  return neg && /[1-9]/.test(body) ? `-${body}` : body;
}

/** A plain decimal text as digits N and scale s (value N * 10^-s). */
function digitsOf(text: string): { n: bigint; scale: number } {
  const [ip, fp = ''] = text.split('.') as [string, string | undefined];
  return { n: BigInt(ip + fp), scale: fp.length };
}

/** Exact: text / m is an integer (both as decimals; m from its shortest form). */
function isMultiple(text: string, m: number): boolean {
  const x = digitsOf(text);
  const y = digitsOf(plain(String(m)));
  // x.n 10^-x.s / (y.n 10^-y.s) = x.n 10^y.s / (y.n 10^x.s)
  return (x.n * 10n ** BigInt(y.scale)) % (y.n * 10n ** BigInt(x.scale)) === 0n;
}

function significantDigits(text: string): number {
  return text.replace(/[-.]/g, '').replace(/^0+/, '').replace(/0+$/, '').length;
}

const isBounded = (b: NumberBounds) => [...BOUND_KEYWORDS, 'multipleOf' as const].some((k) => b[k] !== undefined);

/** The format rule: what the automaton may write at all for these keywords. */
function formatOk(text: string, b: NumberBounds): boolean {
  if (!isBounded(b)) return (b.integer ? JSON_INTEGER : JSON_NUMBER).test(text);
  if (b.integer) return JSON_INTEGER.test(text) && (BigInt(text) < 0n ? -BigInt(text) : BigInt(text)) <= BigInt(MAX_EXACT_INTEGER);
  if (!PLAIN_NUMBER.test(text) || significantDigits(text) > MAX_SIGNIFICANT_DIGITS) return false;
  if (b.multipleOf === undefined) return true;
  const fracDigits = text.split('.')[1]?.length ?? 0;
  return fracDigits <= (plain(String(b.multipleOf)).split('.')[1]?.length ?? 0);
}

/** The bounds as a validator checks them: on the parsed double. */
function boundsOk(x: number, b: NumberBounds): boolean {
  if (!Number.isFinite(x) || (b.integer && !Number.isInteger(x))) return false;
  if (b.minimum !== undefined && !(x >= b.minimum)) return false;
  if (b.maximum !== undefined && !(x <= b.maximum)) return false;
  if (b.exclusiveMinimum !== undefined && !(x > b.exclusiveMinimum)) return false;
  if (b.exclusiveMaximum !== undefined && !(x < b.exclusiveMaximum)) return false;
  return true;
}

function satisfies(text: string, b: NumberBounds): boolean {
  return boundsOk(JSON.parse(text) as number, b) && (b.multipleOf === undefined || isMultiple(text, b.multipleOf));
}

const validators = new Map<string, { all: ValidateFunction; bounds: ValidateFunction }>();
function ajvAgrees(text: string, b: NumberBounds): boolean {
  const key = JSON.stringify(b);
  let v = validators.get(key);
  if (!v) {
    const { integer, multipleOf, ...rest } = b;
    const type = integer ? 'integer' : 'number';
    v = { all: ajv.compile({ type, ...rest, ...(multipleOf === undefined ? {} : { multipleOf }) }), bounds: ajv.compile({ type, ...rest }) };
    validators.set(key, v);
  }
  const x = JSON.parse(text) as number;
  const m = b.multipleOf;
  const floatMultipleReliable = m === undefined || Number.isInteger(m) || Math.abs(x / m) < 1e6;
  return (floatMultipleReliable ? v.all : v.bounds)(x) === true;
}

// --- random inputs ---------------------------------------------------------------------------

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(0, xs.length)]!;
}

/** Bound values of mixed magnitude and digit counts, exponent notation included. */
function randomValue(rng: Rng): number {
  const sign = rng.next() < 0.35 ? -1 : 1;
  switch (rng.int(0, 8)) {
    case 0:
      return rng.int(-20, 21);
    case 1:
      return pick(rng, [0, -0, 0.25, 1.5, -3.75, 0.1, -0.5, 2.5, 0.3, 99.99, -12.125, 150, 1]);
    case 2:
      return (sign * rng.int(0, 4001)) / pick(rng, [4, 8, 100, 1000]);
    case 3:
      return sign * pick(rng, [1e15, 1e16, 2 ** 53, 2 ** 53 + 2, 9007199254740993, 1234567890123456, 1e21, 123456789012345.6, 99999999999999.99]);
    case 4:
      return sign * pick(rng, [1e-6, 1e-7, 1.5e-10, 5e-324, 1e-16, 3e-17, 0.000123]);
    case 5:
      return sign * rng.next() * 10 ** rng.int(-3, 17);
    case 6:
      return sign * pick(rng, [0.1 + 0.2, 0.1 + 0.7, 1 - 2 ** -52, 1 + 2 ** -52, 1234567.8901234567]);
    default:
      return (sign * rng.int(0, 1_000_000)) / 10 ** rng.int(0, 7);
  }
}

const MULTIPLES = [1, 2, 3, 7, 10, 0.5, 0.25, 0.01, 0.1, 2.5, 0.001, 100, 0.2, 1e-6];

function randomBounds(rng: Rng): NumberBounds {
  const b: NumberBounds = { integer: rng.next() < 0.4 };
  const lowerKw = rng.next() < 0.5 ? 'minimum' : 'exclusiveMinimum';
  const upperKw = rng.next() < 0.5 ? 'maximum' : 'exclusiveMaximum';
  const lower = rng.next() < 0.65 ? randomValue(rng) : undefined;
  if (lower !== undefined) b[lowerKw] = lower;
  if (rng.next() < 0.65) {
    // Mostly a range above the lower bound (a random width of mixed magnitude), sometimes anything.
    b[upperKw] = lower !== undefined && rng.next() < 0.75 ? lower + Math.abs(randomValue(rng)) : randomValue(rng);
  }
  if (rng.next() < 0.15) b[lowerKw === 'minimum' ? 'exclusiveMinimum' : 'minimum'] = randomValue(rng);
  if (rng.next() < 0.4 || !isBounded(b)) b.multipleOf = pick(rng, MULTIPLES);
  return b;
}

/** Candidate texts: the bounds, their decimal neighbours, multiples near them, random values in range. */
function candidates(b: NumberBounds, rng: Rng): string[] {
  const out = new Set<string>(['0', '-0', '0.0', '-0.0', '1', '-1', '1e5', '1.5', '1.50', '10']);
  const around = (text: string) => {
    out.add(text);
    const { n, scale } = digitsOf(text);
    for (const s of [scale, scale + 1, Math.max(scale - 1, 0), 15, 16, 17]) {
      const base = s >= scale ? n * 10n ** BigInt(s - scale) : n / 10n ** BigInt(scale - s);
      for (const d of [-2n, -1n, 0n, 1n, 2n]) out.add(decText(base + d, s));
    }
  };
  const values = BOUND_KEYWORDS.map((k) => b[k]).filter((v) => v !== undefined);
  for (const v of values) {
    around(plain(String(v)));
    for (let p = 1; p <= 17; p++) around(plain(v.toPrecision(p)));
    for (const d of [1, 0.5, 0.1, 0.01, 1e-6, Math.abs(v) * 1e-15]) {
      around(plain(String(v + d)));
      around(plain(String(v - d)));
    }
    // Trailing fraction zeros and an exponent: the format rule decides those.
    out.add(`${plain(String(v))}${plain(String(v)).includes('.') ? '' : '.'}0`);
    out.add(String(v.toExponential()));
  }
  const m = b.multipleOf;
  if (m !== undefined) {
    const md = digitsOf(plain(String(m)));
    for (const v of [0, ...values]) {
      const q = BigInt(Math.floor(v / m));
      for (let i = -3n; i <= 3n; i++) around(decText((q + i) * md.n, md.scale));
    }
    for (let i = 0; i < 10; i++) around(decText(BigInt(rng.int(-1000, 1001)) * md.n, md.scale));
  }
  // Random values across the range (or around zero), with random precision.
  const lo = Math.max(...values.filter((_, i) => i % 2 === 0), -1e6);
  const hi = Math.min(...values.filter((_, i) => i % 2 === 1), 1e6);
  for (let i = 0; i < 30; i++) {
    const x = lo <= hi ? lo + rng.next() * (hi - lo) : randomValue(rng);
    out.add(plain(x.toPrecision(rng.int(1, 18))));
    out.add(plain(String(Math.round(x))));
  }
  return [...out].filter((t) => t !== '');
}

// --- tests -------------------------------------------------------------------------------------

describe('numberDfa without bounds', () => {
  it('every text is a finite double: the longest exponent cannot overflow', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const dfa = numberDfa({ integer: false });
    const enc = new TextEncoder();
    const largest = `-${'9'.repeat(MAX_INT_DIGITS)}.${'9'.repeat(MAX_FRAC_DIGITS)}e+${'9'.repeat(MAX_EXP_DIGITS)}`;
    expect(dfa.matches(enc.encode(largest))).toBe(true);
    expect(Number.isFinite(Number(largest))).toBe(true);
    expect(dfa.matches(enc.encode('1e999'))).toBe(false);
    for (let i = 0; i < 300; i++) {
      const text = new TextDecoder().decode(sampleDfa(dfa, rng, 48));
      expect(Number.isFinite(JSON.parse(text) as number), `seed ${seed}: ${text}`).toBe(true);
    }
  });

  for (const integer of [true, false]) {
    const reference = integer ? JSON_INTEGER : JSON_NUMBER;
    it(`${integer ? 'integer' : 'number'}: exactly the JSON grammar within the digit limits`, () => {
      const seed = freshSeed();
      const rng = new Rng(seed);
      const dfa = numberDfa({ integer });
      expect(dfa.dist[0], `seed ${seed}`).toBe(1);
      for (let i = 0; i < 3000; i++) {
        const text = dec.decode(sampleDfa(dfa, rng, 48));
        expect(reference.test(text), `seed ${seed}: sampled ${text}`).toBe(true);
        expect(Number.isNaN(JSON.parse(text)), `seed ${seed}: ${text}`).toBe(false);
      }
      // Grammar-shaped strings at and past every limit, then single-character mutations of them.
      const digits = (n: number, lead = true) => Array.from({ length: n }, (_, k) => String(k === 0 && lead ? rng.int(1, 10) : rng.int(0, 10))).join('');
      const ALPHABET = '0123456789-+.eE';
      for (let i = 0; i < 6000; i++) {
        let t = (rng.next() < 0.3 ? '-' : '') + (rng.next() < 0.2 ? '0' : digits(rng.int(1, MAX_INT_DIGITS + 2)));
        if (rng.next() < 0.5) t += '.' + digits(rng.int(0, MAX_FRAC_DIGITS + 2), false);
        if (rng.next() < 0.4) t += pick(rng, ['e', 'E']) + pick(rng, ['', '+', '-']) + digits(rng.int(0, MAX_EXP_DIGITS + 2), false);
        for (let k = rng.int(0, 3); k > 0; k--) {
          const at = rng.int(0, t.length + 1);
          const op = rng.int(0, 3);
          t = t.slice(0, at) + (op === 1 ? '' : pick(rng, [...ALPHABET])) + t.slice(op === 0 ? at : at + 1);
        }
        expect(accepts(dfa, t), `seed ${seed}: ${JSON.stringify(t)}`).toBe(reference.test(t));
      }
      for (const t of ['0', '-0', '7', '-120', '9'.repeat(MAX_INT_DIGITS), '-' + '9'.repeat(MAX_INT_DIGITS)]) expect(accepts(dfa, t), t).toBe(true);
      for (const t of ['', '-', '01', '-01', '+1', '1'.repeat(MAX_INT_DIGITS + 1), '1.', '.5', '1e', '1e+', '--1', '0x1', ' 1']) expect(accepts(dfa, t), t).toBe(false);
      const fractional = ['0.5', '-0.0', '1E-99', '1e+99', '2.5e10', `1.${'0'.repeat(MAX_FRAC_DIGITS)}`];
      for (const t of fractional) expect(accepts(dfa, t), t).toBe(!integer);
      for (const t of [`1.${'0'.repeat(MAX_FRAC_DIGITS + 1)}`, '1e1000', '1.e5', '1e5.5', '1ee5', '1e+-5']) expect(accepts(dfa, t), t).toBe(false);
    });
  }
});

describe('numberDfa with bounds', () => {
  it('random bound combinations: samples validate, candidates are accepted iff they validate', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    let built = 0;
    const COMBOS = 300;
    for (let c = 0; c < COMBOS; c++) {
      const b = randomBounds(rng);
      const what = `seed ${seed}, bounds ${JSON.stringify(b)}`;
      let dfa: Dfa;
      try {
        dfa = numberDfa(b);
      } catch (err) {
        // A refusal must name a keyword of the schema, and nothing may satisfy the schema.
        expect(err, what).toBeInstanceOf(NumberBoundsError);
        const e = err as NumberBoundsError;
        expect(Object.keys(b), `${what}: ${e.message}`).toContain(e.keyword);
        expect(e.message, what).not.toMatch(/states/);
        for (const t of candidates(b, rng)) expect(formatOk(t, b) && satisfies(t, b), `${what}: refused (${e.message}) but ${t} validates`).toBe(false);
        continue;
      }
      built++;
      expect(dfa.stateCount, what).toBeLessThan(b.integer ? 600 : 2500);
      for (let i = 0; i < 40; i++) {
        const text = dec.decode(sampleDfa(dfa, rng, 40));
        expect(formatOk(text, b), `${what}: sampled ${text} breaks the format rule`).toBe(true);
        expect(satisfies(text, b), `${what}: sampled ${text} does not validate`).toBe(true);
        expect(ajvAgrees(text, b), `${what}: ajv rejects sampled ${text}`).toBe(true);
      }
      for (const t of candidates(b, rng)) {
        expect(accepts(dfa, t), `${what}: candidate ${t}`).toBe(formatOk(t, b) && satisfies(t, b));
      }
    }
    // Most random combinations admit numbers; the refusals are checked above.
    expect(built, `seed ${seed}`).toBeGreaterThan(COMBOS / 2);
  });

  it('typical schemas: exact ranges and small automata', () => {
    const age = numberDfa({ integer: true, minimum: 0, maximum: 150 });
    for (let i = -1000; i <= 1000; i++) expect(accepts(age, String(i)), String(i)).toBe(i >= 0 && i <= 150);
    expect(accepts(age, '-0')).toBe(true);
    expect(accepts(age, '150.0')).toBe(false);
    expect(age.stateCount).toBeLessThan(20);

    const unit = numberDfa({ integer: false, minimum: 0, maximum: 1 });
    for (const t of ['0', '-0', '1', '1.0', '0.5', '0.999999999999999', '0.000000000000001', '0.0000000000000001']) expect(accepts(unit, t), t).toBe(true);
    // Past the rule (16 significant digits) even when the value is in range.
    for (const t of ['0.9999999999999999', '1.000000000000001', '1.5', '-0.1', '1e0', '0.5e-1']) expect(accepts(unit, t), t).toBe(false);

    const cents = numberDfa({ integer: false, multipleOf: 0.01, minimum: 0, maximum: 100 });
    for (const t of ['0', '0.01', '99.99', '100', '3.1', '42']) expect(accepts(cents, t), t).toBe(true);
    for (const t of ['0.001', '100.01', '-0.01', '3.141']) expect(accepts(cents, t), t).toBe(false);

    // A 16-digit integer range stays at a few dozen states.
    const wide = numberDfa({ integer: true, minimum: -1234567890123456, maximum: 8765432109876543 });
    expect(wide.stateCount).toBeLessThan(300);
    for (const t of ['-1234567890123456', '8765432109876543', '0']) expect(accepts(wide, t), t).toBe(true);
    for (const t of ['-1234567890123457', '8765432109876544']) expect(accepts(wide, t), t).toBe(false);
  });

  it('bounds with 16-17 significant digits or exponent notation, and -0', () => {
    const cases: [NumberBounds, string[], string[]][] = [
      [{ integer: false, exclusiveMaximum: 0.1 + 0.2 }, ['0.3', '-5', '0.299999999999999'], ['0.300000000000001', '0.30000000000000004']],
      [{ integer: false, exclusiveMinimum: 0.1 + 0.2 }, ['0.300000000000001', '1'], ['0.3', '0.30000000000000004']],
      [{ integer: false, minimum: 0.1 + 0.2 }, ['0.300000000000001'], ['0.3']],
      [{ integer: false, exclusiveMinimum: 0.1 }, ['0.100000000000001', '0.2'], ['0.1', '0.10', '0.0999999999']],
      [{ integer: false, maximum: 1e21 }, ['9999999999999990', '999999999999999', '-1'], []],
      [{ integer: false, minimum: 1e-7 }, ['0.0000001', '0.00000010', '0.0000001000001'], ['0.00000009', '0', '-0']],
      [{ integer: false, exclusiveMaximum: -1e-7 }, ['-0.00000011', '-5'], ['-0.0000001', '0', '-0', '-0.00000001']],
      [{ integer: false, minimum: 0 }, ['0', '-0', '-0.0'], ['-0.000001']],
      [{ integer: false, exclusiveMinimum: 0 }, ['0.0000000000000001'], ['0', '-0', '-0.0']],
      [{ integer: false, exclusiveMaximum: 0 }, ['-0.0000000000000001'], ['0', '-0']],
      [{ integer: true, exclusiveMaximum: 0 }, ['-1'], ['0', '-0']],
      [{ integer: true, minimum: 2.5, maximum: 7.5 }, ['3', '7'], ['2', '8']],
      [{ integer: true, exclusiveMinimum: -2.5, exclusiveMaximum: 2 }, ['-2', '1'], ['-3', '2']],
      [{ integer: true, exclusiveMaximum: 2 ** 53 }, ['9007199254740991'], ['9007199254740992', '9007199254740993']],
      [{ integer: true, minimum: -1e300 }, ['-9007199254740991', '9007199254740991'], ['-9007199254740992', '9007199254740992']],
    ];
    for (const [b, yes, no] of cases) {
      const dfa = numberDfa(b);
      for (const t of yes) {
        expect(accepts(dfa, t), `${JSON.stringify(b)} ${t}`).toBe(true);
        expect(satisfies(t, b), `${JSON.stringify(b)} ${t} (reference)`).toBe(true);
      }
      for (const t of no) expect(accepts(dfa, t), `${JSON.stringify(b)} ${t}`).toBe(false);
    }
  });

  it('multipleOf: remainders over integer and fraction digits', () => {
    const cases: [NumberBounds, string[], string[]][] = [
      [{ integer: false, multipleOf: 10 }, ['10', '-20', '0', '-0', '1000000000000000'], ['1.0', '15', '5']],
      [{ integer: false, multipleOf: 0.1 }, ['0.3', '-12.7', '5'], ['0.35', '0.30']],
      [{ integer: false, multipleOf: 2.5 }, ['7.5', '-2.5', '10', '0'], ['1.25', '2', '7.4']],
      [{ integer: false, multipleOf: 1e-20 }, ['0.123456789012345', '0.0000000000000001', '1.5'], ['1e-20', '0.1234567890123456']],
      [{ integer: true, multipleOf: 0.25 }, ['1', '-7', '123'], ['1.25']],
      [{ integer: true, multipleOf: 1e6 }, ['0', '-0', '3000000', '9007199000000000'], ['300000', '3000001']],
      [{ integer: true, multipleOf: 2e3 }, ['4000', '-12000'], ['3000', '1000', '2100']],
      [{ integer: true, multipleOf: 7, minimum: -50, maximum: 50 }, ['-49', '0', '49'], ['-56', '50', '56']],
    ];
    for (const [b, yes, no] of cases) {
      const dfa = numberDfa(b);
      for (const t of yes) expect(accepts(dfa, t), `${JSON.stringify(b)} ${t}`).toBe(true);
      for (const t of no) expect(accepts(dfa, t), `${JSON.stringify(b)} ${t}`).toBe(false);
    }
    // Every integer multiple of 7 (within the exact range) and nothing else.
    const seed = freshSeed();
    const rng = new Rng(seed);
    const sevens = numberDfa({ integer: true, multipleOf: 7 });
    for (let i = 0; i < 2000; i++) {
      const x = BigInt(Math.floor((rng.next() * 2 - 1) * 10 ** rng.int(1, 16)));
      expect(accepts(sevens, x.toString()), `seed ${seed}: ${x}`).toBe(x % 7n === 0n);
    }
  });
});

describe('numberDfa refusals', () => {
  const refuse = (b: NumberBounds, keyword: Keyword, message: RegExp | string) => {
    let caught: unknown;
    try {
      numberDfa(b);
    } catch (err) {
      caught = err;
    }
    expect(caught, JSON.stringify(b)).toBeInstanceOf(NumberBoundsError);
    const e = caught as NumberBoundsError;
    expect(e.keyword, e.message).toBe(keyword);
    if (typeof message === 'string') expect(e.message).toBe(message);
    else expect(e.message).toMatch(message);
  };

  it('bounds that are not finite numbers', () => {
    for (const kw of [...BOUND_KEYWORDS, 'multipleOf' as const]) {
      for (const v of [NaN, Infinity, -Infinity]) {
        for (const integer of [true, false]) refuse({ integer, [kw]: v }, kw, /must be a finite number/);
      }
    }
  });

  it('multipleOf that is not positive, too precise, or too large an automaton', () => {
    refuse({ integer: false, multipleOf: 0 }, 'multipleOf', /greater than 0/);
    refuse({ integer: true, multipleOf: -2 }, 'multipleOf', /greater than 0/);
    refuse({ integer: false, multipleOf: 0.1 + 0.2 }, 'multipleOf', /17 significant digits; at most 15/);
    refuse({ integer: true, multipleOf: 1234567890123456 }, 'multipleOf', /significant digits/);
    refuse({ integer: true, multipleOf: 99991 }, 'multipleOf', new RegExp(`more than ${MAX_DFA_STATES} states`));
    refuse({ integer: true, multipleOf: 7919 }, 'multipleOf', new RegExp(`more than ${MAX_DFA_STATES} states`));
    refuse({ integer: false, multipleOf: 0.49999, minimum: -1e12, maximum: 1e12 }, 'multipleOf', new RegExp(`more than ${MAX_DFA_STATES} states`));
  });

  it('empty ranges', () => {
    refuse({ integer: true, minimum: 5, maximum: 3 }, 'minimum', '"minimum" 5 is greater than "maximum" 3: no number satisfies the schema');
    refuse({ integer: false, exclusiveMinimum: 3, maximum: 3 }, 'exclusiveMinimum', '"exclusiveMinimum" 3 is equal to "maximum" 3: no number satisfies the schema');
    refuse({ integer: false, minimum: 1, exclusiveMinimum: 2, exclusiveMaximum: 1.5 }, 'exclusiveMinimum', /"exclusiveMinimum" 2 is greater than "exclusiveMaximum" 1.5/);
    refuse({ integer: true, minimum: 1.2, maximum: 1.8 }, 'minimum', 'no integer satisfies "minimum" 1.2 and "maximum" 1.8: widen the range');
    refuse({ integer: true, exclusiveMinimum: 1, exclusiveMaximum: 2 }, 'exclusiveMinimum', /no integer satisfies/);
    refuse({ integer: true, minimum: 1e20 }, 'minimum', /above 9007199254740991/);
    refuse({ integer: true, exclusiveMaximum: -1e20 }, 'exclusiveMaximum', /below -9007199254740991/);
    refuse({ integer: false, minimum: 1e20 }, 'minimum', /no number .*16 integer digits and 15 significant digits.* satisfies "minimum" 100000000000000000000/);
    refuse({ integer: false, exclusiveMinimum: 0.1, exclusiveMaximum: 0.1000000000000001 }, 'exclusiveMinimum', /no number/);
    refuse({ integer: false, minimum: 0.1 + 0.2, maximum: 0.1 + 0.2 }, 'minimum', /no number/);
    refuse({ integer: true, multipleOf: 5, minimum: 1, maximum: 4 }, 'multipleOf', 'no multiple of 5 satisfies "minimum" 1 and "maximum" 4: widen the range or change "multipleOf"');
    refuse({ integer: false, multipleOf: 0.5, exclusiveMinimum: 1, exclusiveMaximum: 1.5 }, 'multipleOf', /no multiple of 0.5/);
  });
});
