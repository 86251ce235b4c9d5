/**
 * FORMAT_PATTERNS against ajv-formats' full validators: every string a format's DFA accepts
 * (random walks, and mutations of them that it still accepts) must be valid, in both encodings;
 * typical values of real data must be accepted, and near misses refused.
 */
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { describe, expect, it } from 'vitest';
import { Rng } from '../../util/rng.ts';
import { freshSeed } from '../../util/testing.ts';
import type { Dfa } from './dfa.ts';
import { FORMAT_PATTERNS } from './formats.ts';
import { compileRegex, type RegexOptions } from './regex.ts';
import { sampleDfa } from './sample.testing.ts';

// ajv-formats is CommonJS: under NodeNext its default import is the module object.
const addFormats = addFormatsModule.default;
const ajv = new Ajv();
addFormats(ajv);

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function encode(s: string, encoding: RegexOptions['encoding']): Uint8Array {
  return enc.encode(encoding === 'utf8' ? s : JSON.stringify(s));
}

function decode(bytes: Uint8Array, encoding: RegexOptions['encoding']): string {
  const text = dec.decode(bytes);
  return encoding === 'utf8' ? text : (JSON.parse(text) as string);
}

const VALID: Record<string, string[]> = {
  'date-time': ['2024-03-15T10:30:00Z', '2024-03-15T10:30:00.123Z', '1999-12-31T23:59:59+05:30', '2000-02-29T00:00:00-08:00'],
  time: ['10:30:00Z', '23:59:59.999999999+14:00', '00:00:00-00:00'],
  date: ['2024-03-15', '2024-02-29', '2000-02-29', '1900-02-28', '0001-01-01', '2023-04-30', '2023-12-31'],
  duration: ['P1D', 'PT1H30M', 'P1Y2M3DT4H5M6S', 'P3W', 'PT0S', 'P1M', 'PT5M'],
  email: ['john.doe@example.com', 'a_b+tag@mail.example.co.uk', 'X%Y@sub-domain.example.org', 'user123@gmail.com'],
  hostname: ['example.com', 'localhost', 'api.github.com', 'my-service.my-namespace.svc.cluster.local', 'ip-10-0-0-1', 'A1.B2'],
  ipv4: ['192.168.0.1', '10.0.0.255', '0.0.0.0', '255.255.255.255', '8.8.8.8'],
  ipv6: ['::', '::1', 'fe80::1', '2001:db8::8a2e:370:7334', '2001:0DB8:85A3:0000:0000:8A2E:0370:7334', '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8'],
  uuid: ['550e8400-e29b-41d4-a716-446655440000', 'F47AC10B-58CC-4372-A567-0E02B2C3D479', '00000000-0000-0000-0000-000000000000'],
  uri: ['https://example.com', 'http://localhost:8080/api/v1/items?id=5&sort=asc#top', 'https://en.wikipedia.org/wiki/URI', 'https://a.b/%20x/'],
};

const INVALID: Record<string, string[]> = {
  'date-time': ['2024-03-15 10:30:00Z', '2024-03-15T10:30:00', '2023-02-29T10:30:00Z'],
  time: ['10:30:00', '24:00:00Z', '10:60:00Z', '10:30:60Z', '10:30:00+24:00'],
  date: ['2023-02-29', '1900-02-29', '2024-13-01', '2024-04-31', '2024-00-10', '24-01-01'],
  duration: ['P', 'PT', 'P1DT', 'P1W2D', '1D', 'P1H'],
  email: ['john..doe@example.com', '.a@example.com', 'a@example', 'a@-x.com', 'a@x-.com'],
  hostname: ['-a.com', 'a-.com', 'a..b', '.a', 'a_b.com'],
  ipv4: ['256.1.1.1', '01.2.3.4', '1.2.3', '1.2.3.4.5'],
  ipv6: ['1:2:3:4:5:6:7:8:9', '1::2::3', ':1', '12345::', '1:2:3:4:5:6:7:8::'],
  uuid: ['550e8400e29b41d4a716446655440000', '550e8400-e29b-41d4-a716-44665544000', 'g50e8400-e29b-41d4-a716-446655440000'],
  uri: ['example.com', 'ftp://example.com', 'https://', 'https://exa mple.com'],
};

/**
 * A string of the greatest length the DFA accepts, choosing at random among the longest paths,
 * or undefined when the language is infinite. Random walks seldom reach the length limits
 * (hostname's 253 characters) where a pattern is most likely wrong.
 */
function longest(dfa: Dfa, rng: Rng): Uint8Array | undefined {
  const n = dfa.stateCount;
  const best = new Float64Array(n).fill(NaN); // longest accepted suffix from each state
  const state = new Uint8Array(n); // 0 unseen, 1 on the stack, 2 done
  const visit = (s: number): boolean => {
    state[s] = 1;
    let b = dfa.accepting[s] ? 0 : -Infinity;
    for (let e = dfa.offsets[s]!; e < dfa.offsets[s + 1]!; e++) {
      const t = dfa.to[e]!;
      if (state[t] === 1) return false; // a cycle: unbounded
      if (state[t] === 0 && !visit(t)) return false;
      b = Math.max(b, best[t]! + 1);
    }
    best[s] = b;
    state[s] = 2;
    return true;
  };
  if (!visit(0)) return undefined;
  const out: number[] = [];
  for (let s = 0; best[s]! > 0; ) {
    const es: number[] = [];
    for (let e = dfa.offsets[s]!; e < dfa.offsets[s + 1]!; e++) if (best[dfa.to[e]!] === best[s]! - 1) es.push(e);
    const e = es[rng.int(0, es.length)]!;
    out.push(rng.int(dfa.lo[e]!, dfa.hi[e]! + 1));
    s = dfa.to[e]!;
  }
  return Uint8Array.from(out);
}

describe('FORMAT_PATTERNS', () => {
  it('covers the formats OpenAI documents, and uri', () => {
    expect(Object.keys(FORMAT_PATTERNS).sort()).toEqual(['date', 'date-time', 'duration', 'email', 'hostname', 'ipv4', 'ipv6', 'time', 'uri', 'uuid']);
  });

  for (const [format, pattern] of Object.entries(FORMAT_PATTERNS)) {
    it(`${format}: every accepted string is valid under ajv-formats (full)`, () => {
      const seed = freshSeed();
      const rng = new Rng(seed);
      const validate = ajv.compile({ type: 'string', format });
      for (const encoding of ['utf8', 'json-string'] as const) {
        const t0 = performance.now();
        const dfa = compileRegex(pattern, { encoding });
        console.log(`format ${format} (${encoding}): ${dfa.stateCount} states, compiled in ${(performance.now() - t0).toFixed(1)} ms`);
        const where = `${format} (${encoding}), seed ${seed}`;
        const samples: string[] = [];
        for (let k = 0; k < 300; k++) {
          const s = decode(sampleDfa(dfa, rng, 80), encoding);
          expect(validate(s), `${where}: sample ${JSON.stringify(s)}`).toBe(true);
          samples.push(s);
        }
        for (let k = 0; k < 20; k++) {
          const bytes = longest(dfa, rng);
          if (!bytes) break;
          const s = decode(bytes, encoding);
          expect(validate(s), `${where}: longest ${JSON.stringify(s)}`).toBe(true);
        }
        // Edits of valid strings that the DFA still accepts: the pattern's edges, where subsets go wrong.
        const alphabet = [...'0123456789aAfFzZtT:-.+@/?#%_W PDHMSYx'];
        for (let k = 0; k < 2000; k++) {
          const cps = [...samples[rng.int(0, samples.length)]!];
          const at = rng.int(0, cps.length + 1);
          const op = rng.int(0, 3);
          const c = alphabet[rng.int(0, alphabet.length)]!;
          if (op === 0) cps.splice(at, 0, c);
          else if (op === 1) cps.splice(at, 1);
          else cps.splice(at, 1, c);
          const s = cps.join('');
          if (dfa.matches(encode(s, encoding))) expect(validate(s), `${where}: mutation ${JSON.stringify(s)}`).toBe(true);
        }
        for (const s of VALID[format]!) {
          expect(validate(s), `${format}: ${s} should be valid`).toBe(true);
          expect(dfa.matches(encode(s, encoding)), `${where}: accepts ${s}`).toBe(true);
        }
        for (const s of INVALID[format]!) expect(dfa.matches(encode(s, encoding)), `${where}: refuses ${s}`).toBe(false);
      }
    });
  }
});
