/**
 * Random strings of a Dfa's language, for tests: a random walk from the start that picks one of
 * the state's byte ranges uniformly (so rare branches, such as an escape or a 4-byte sequence,
 * come up as often as common ones), then a byte inside it. The walk stops at an accepting state
 * with a probability drawn per string (short and long strings both appear), and once it has read
 * about `maxLen` bytes it takes the shortest way to acceptance (`dist`), so it always ends.
 */
import type { Dfa } from './dfa.ts';
import type { Rng } from '../../util/rng.ts';

const STOP_CHANCES = [0.03, 0.15, 0.4];

/** One string of the language, as bytes; longer than `maxLen` only when the language requires it. */
export function sampleDfa(dfa: Dfa, rng: Rng, maxLen = 64): Uint8Array {
  const out: number[] = [];
  walkDfa(dfa, rng, STOP_CHANCES[rng.int(0, STOP_CHANCES.length)]!, maxLen, out);
  return Uint8Array.from(out);
}

/**
 * The walk itself, appending one string's bytes to `out`: at an accepting state it stops with
 * chance `stop`; once the bytes it wrote and the shortest way on reach `budget`, it takes that
 * shortest way (a budget of 0: the shortest string from here). Grammar samples walk each terminal
 * with it (grammar.testing.ts).
 */
export function walkDfa(dfa: Dfa, rng: Rng, stop: number, budget: number, out: number[]): void {
  const start = out.length;
  let s = 0;
  for (;;) {
    const first = dfa.offsets[s]!;
    const end = dfa.offsets[s + 1]!;
    const accepting = dfa.accepting[s] === 1;
    if (accepting && (first === end || rng.next() < stop)) return;
    let e: number;
    if (out.length - start + dfa.dist[s]! >= budget) {
      if (accepting) return;
      const closer: number[] = [];
      for (let i = first; i < end; i++) if (dfa.dist[dfa.to[i]!] === dfa.dist[s]! - 1) closer.push(i);
      e = closer[rng.int(0, closer.length)]!;
    } else {
      e = rng.int(first, end);
    }
    out.push(rng.int(dfa.lo[e]!, dfa.hi[e]! + 1));
    s = dfa.to[e]!;
  }
}
