/**
 * Stop strings over streamed text.
 *
 * Tokens decode to pieces of text, and a stop string may span several of them ("###" can arrive
 * as "#", "##"). So the matcher works on text, not tokens, and holds back the longest tail of
 * what it has seen that is still the beginning of some stop string: that tail is shown only once
 * it can no longer become a stop string. The stop string itself, and everything after it, is
 * never emitted.
 *
 * Matching is on UTF-16 code units of already-decoded text (the detokenizer is responsible for
 * never producing half a character).
 */
export class StopMatcher {
  private readonly stops: string[];
  /** Text received but not yet emitted: always a proper prefix of some stop string (or empty). */
  private held = '';
  private stopped = false;

  constructor(stops: string[]) {
    for (const s of stops) {
      if (typeof s !== 'string' || s.length === 0) throw new RangeError('stop strings must be non-empty strings');
    }
    this.stops = [...stops];
  }

  /** Whether a stop string was found; further pushes are ignored. */
  get isStopped(): boolean {
    return this.stopped;
  }

  /**
   * Feeds the next piece of decoded text. `emit` is the text that is now safe to show; when a stop
   * string completes, `emit` is what came before it and `stopped` is true.
   */
  push(text: string): { emit: string; stopped: boolean } {
    if (this.stopped) return { emit: '', stopped: true };
    const pending = this.held + text;

    // Generation ends where a stop string is first complete: the smallest end position of any
    // match (if several end there, the longest one). This is what feeding the text one character
    // at a time would give, so the result does not depend on how the text was split into tokens.
    // `held` contains no whole stop string, so every match here is new.
    let cut = -1;
    let end = Infinity;
    for (const s of this.stops) {
      const at = pending.indexOf(s); // the first match of s is also the one that ends first
      if (at < 0) continue;
      if (at + s.length < end || (at + s.length === end && at < cut)) {
        end = at + s.length;
        cut = at;
      }
    }
    if (cut >= 0) {
      this.stopped = true;
      this.held = '';
      return { emit: pending.slice(0, cut), stopped: true };
    }

    const keep = this.longestStopPrefixSuffix(pending);
    this.held = pending.slice(pending.length - keep);
    return { emit: pending.slice(0, pending.length - keep), stopped: false };
  }

  /** End of generation: releases what was held back (nothing after a stop). */
  flush(): string {
    const rest = this.stopped ? '' : this.held;
    this.held = '';
    return rest;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of a stop string. */
  private longestStopPrefixSuffix(text: string): number {
    let best = 0;
    for (const s of this.stops) {
      // Try suffixes from the longest that could matter (|s| - 1) down to the best found so far.
      for (let len = Math.min(s.length - 1, text.length); len > best; len--) {
        if (text.charCodeAt(text.length - len) === s.charCodeAt(0) && s.startsWith(text.slice(text.length - len))) {
          best = len;
          break;
        }
      }
    }
    return best;
  }
}
