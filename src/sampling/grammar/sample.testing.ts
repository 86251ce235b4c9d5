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
  const stop = STOP_CHANCES[rng.int(0, STOP_CHANCES.length)]!;
  const out: number[] = [];
  let s = 0;
  for (;;) {
    const first = dfa.offsets[s]!;
    const end = dfa.offsets[s + 1]!;
    if (dfa.accepting[s] === 1 && (first === end || rng.next() < stop)) break;
    let e: number;
    if (out.length + dfa.dist[s]! >= maxLen) {
      if (dfa.accepting[s] === 1) break;
      const closer: number[] = [];
      for (let i = first; i < end; i++) if (dfa.dist[dfa.to[i]!] === dfa.dist[s]! - 1) closer.push(i);
      e = closer[rng.int(0, closer.length)]!;
    } else {
      e = rng.int(first, end);
    }
    out.push(rng.int(dfa.lo[e]!, dfa.hi[e]! + 1));
    s = dfa.to[e]!;
  }
  return Uint8Array.from(out);
}
