import { describe, expect, it } from 'vitest';
import { StopMatcher } from './stop.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed } from '../util/testing.ts';

/** Pushes the pieces in order; returns each push's result and the flushed tail. */
function feed(stops: string[], pieces: string[]) {
  const m = new StopMatcher(stops);
  const steps = pieces.map((p) => m.push(p));
  return { steps, emitted: steps.map((s) => s.emit).join(''), flushed: m.flush(), stopped: m.isStopped };
}

describe('StopMatcher', () => {
  it('finds a stop string split across tokens and never emits it', () => {
    const r = feed(['###'], ['Hello', ' #', '#', '# World', 'more']);
    expect(r.steps).toEqual([
      { emit: 'Hello', stopped: false },
      { emit: ' ', stopped: false }, // '#' held: it could start '###'
      { emit: '', stopped: false }, // '##' held
      { emit: '', stopped: true }, // '###' complete: nothing of it, nor what follows, is shown
      { emit: '', stopped: true }, // ignored after the stop
    ]);
    expect(r.emitted).toBe('Hello ');
    expect(r.flushed).toBe('');
    expect(r.stopped).toBe(true);
  });

  it('emits the text before the stop string within the same piece', () => {
    expect(feed(['</s>'], ['abc</s>def']).steps).toEqual([{ emit: 'abc', stopped: true }]);
    expect(feed(['<|end_of_turn|>'], ['Hi', '<|end_of', '_turn|>', 'x']).emitted).toBe('Hi');
  });

  it('releases held text once it can no longer become a stop string', () => {
    const r = feed(['###'], ['a#', '#b', 'c']);
    expect(r.steps).toEqual([
      { emit: 'a', stopped: false },
      { emit: '##b', stopped: false },
      { emit: 'c', stopped: false },
    ]);
    expect(r.flushed).toBe('');
  });

  it('flush releases a held tail at the end of generation', () => {
    const r = feed(['###'], ['x##']);
    expect(r.emitted).toBe('x');
    expect(r.flushed).toBe('##');
    expect(r.stopped).toBe(false);
  });

  it('handles overlapping prefixes (the held tail is the longest candidate)', () => {
    // "aab" inside "aaab": the first 'a' is safe once the third arrives, the rest is the stop.
    const r = feed(['aab'], ['a', 'a', 'a', 'b']);
    expect(r.steps.map((s) => s.emit)).toEqual(['', '', 'a', '']);
    expect(r.stopped).toBe(true);
  });

  it('stops where the first stop string completes, whatever the split', () => {
    expect(feed(['World', 'lo'], ['Hel', 'lo World']).emitted).toBe('Hel');
    expect(feed(['World', 'lo W'], ['Hello', ' World']).emitted).toBe('Hel');
    // A long stop string's prefix is held, but a short one completing first wins...
    expect(feed(['abcd', 'bc'], ['ab', 'c']).emitted).toBe('a');
    // ...even when the long one would have started earlier and both arrive in one piece.
    expect(feed(['abcd', 'bc'], ['abcd']).emitted).toBe('a');
    // Two ending at the same place: the longer one is cut.
    expect(feed(['bc', 'abc'], ['xab', 'c']).emitted).toBe('x');
  });

  it('passes everything through without stop strings', () => {
    const r = feed([], ['a', '#', '']);
    expect(r.emitted).toBe('a#');
    expect(r.flushed).toBe('');
    expect(() => new StopMatcher([''])).toThrow(/non-empty/);
  });

  it('agrees with a plain search of the whole text, however it is split', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const alphabet = 'ab#\u00e9';
    const word = (lo: number, hi: number) =>
      Array.from({ length: rng.int(lo, hi + 1) }, () => alphabet[rng.int(0, alphabet.length)]).join('');
    for (let trial = 0; trial < 2000; trial++) {
      const stops = Array.from({ length: rng.int(1, 4) }, () => word(1, 4));
      const text = word(0, 30);
      // The reference, one character at a time: generation stops as soon as the text seen so far
      // ends with a stop string (the longest, if several), and shows what came before it.
      let expected = text;
      let hit = false;
      for (let end = 1; end <= text.length && !hit; end++) {
        const done = stops.filter((s) => text.slice(0, end).endsWith(s));
        if (done.length) {
          hit = true;
          expected = text.slice(0, end - Math.max(...done.map((s) => s.length)));
        }
      }
      const pieces: string[] = [];
      for (let i = 0; i < text.length; ) {
        const n = rng.int(0, 5);
        pieces.push(text.slice(i, i + n));
        i += n;
      }
      const m = new StopMatcher(stops);
      const label = `seed ${seed} trial ${trial}: ${JSON.stringify({ stops, pieces })}`;
      let emitted = '';
      let received = 0;
      const longest = Math.max(...stops.map((s) => s.length));
      for (const piece of pieces) {
        const { emit, stopped } = m.push(piece);
        emitted += emit;
        received += piece.length;
        // Never shows anything that is not final text...
        expect(expected.startsWith(emitted), label).toBe(true);
        // ...and holds back less than the longest stop string.
        if (!stopped) expect(received - emitted.length, label).toBeLessThan(longest);
      }
      emitted += m.flush();
      expect(emitted, label).toBe(expected);
      expect(m.isStopped, label).toBe(hit);
    }
  });
});
