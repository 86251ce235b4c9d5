/**
 * The pushdown matcher: runs a `Grammar` (grammar.ts) one byte at a time.
 *
 * A state is a terminal in progress (a Dfa and its state) on top of a stack of continuations,
 * each "go on with alternative `alt` of `rule` from symbol `pos`". A byte either moves the
 * terminal's Dfa, or, where the terminal may end, ends it and starts whatever comes next: the
 * continuation is expanded (rules into their alternatives) until a terminal takes the byte. Rules
 * whose first bytes (Grammar.first) exclude the byte are not expanded, and a rule at the end of an
 * alternative replaces the continuation rather than stacking on it (a tail call), so right
 * recursion (repetition) runs in constant stack depth. The grammar is ambiguous in general, so the
 * matcher holds a set of states; JSON schemas and regexes keep it at one or two.
 *
 * Continuations are hash-consed per grammar: equal stacks are one object with one integer id, so a
 * state's key is three integers and sets of states compare cheaply (the token mask cache in
 * constraint.ts is keyed by them).
 *
 * `distance(state)`: the fewest bytes that complete the output from the state (the terminal's
 * Dfa distance plus each continuation's shortest rest); zero exactly when the output may end here.
 */
import type { Dfa } from './dfa.ts';
import type { Grammar } from './grammar.ts';

export interface Cont {
  readonly id: number;
  readonly rule: number;
  readonly alt: number;
  readonly pos: number;
  readonly up: Cont | null;
  /** Shortest rest of this continuation and all below it. */
  readonly rest: number;
}

export interface MatchState {
  /** The terminal in progress, or null before the first byte (then `cont` is unused). */
  readonly dfa: Dfa | null;
  readonly s: number;
  readonly cont: Cont | null;
}

export class Matcher {
  private readonly conts = new Map<string, Cont>();
  private nextId = 1;
  readonly initial: MatchState = { dfa: null, s: 0, cont: null };

  constructor(readonly grammar: Grammar) {}

  /** Appends to `out` the states after byte `b` from `state`. */
  step(state: MatchState, b: number, out: MatchState[]): void {
    const dfa = state.dfa;
    if (dfa === null) {
      this.enterRule(this.grammar.root, null, b, out);
      return;
    }
    const t = dfa.next(state.s, b);
    if (t >= 0) out.push(t === state.s ? state : { dfa, s: t, cont: state.cont });
    if (dfa.accepting[state.s] === 1) this.advance(state.cont, b, out);
  }

  /** Every state after all of `bytes` from any of `states`, duplicates removed. */
  stepBytes(states: readonly MatchState[], bytes: Uint8Array): MatchState[] {
    let cur = states as MatchState[];
    for (const b of bytes) {
      const next: MatchState[] = [];
      for (const s of cur) this.step(s, b, next);
      if (next.length === 0) return next;
      cur = next.length > 1 ? dedupe(next) : next;
    }
    return cur;
  }

  distance(state: MatchState): number {
    if (state.dfa === null) return this.grammar.minLen[this.grammar.root]!;
    return state.dfa.dist[state.s]! + (state.cont ? state.cont.rest : 0);
  }

  /** The output may end in this state. */
  canFinish(state: MatchState): boolean {
    return this.distance(state) === 0;
  }

  /** Continue after a finished symbol: the rest of `cont`'s alternative (conts never sit at an end). */
  private advance(cont: Cont | null, b: number, out: MatchState[]): void {
    if (cont) this.enterSymbols(cont.rule, cont.alt, cont.pos, cont.up, b, out, true);
  }

  /** A rule's non-empty alternatives, each taking `b` (its empty ones are the caller's business). */
  private enterRule(rule: number, up: Cont | null, b: number, out: MatchState[]): void {
    const alts = this.grammar.rules[rule]!.alts;
    for (let a = 0; a < alts.length; a++) if (alts[a]!.length > 0) this.enterSymbols(rule, a, 0, up, b, out, false);
  }

  /**
   * Symbols `pos`.. of an alternative, then `up`: the byte goes to the first symbol that takes it,
   * past any that may be empty; if all of them may be, on to `up` when `fallThrough`.
   */
  private enterSymbols(rule: number, alt: number, pos: number, up: Cont | null, b: number, out: MatchState[], fallThrough: boolean): void {
    const g = this.grammar;
    const seq = g.rules[rule]!.alts[alt]!;
    for (; pos < seq.length; pos++) {
      const sym = seq[pos]!;
      const after = pos + 1 < seq.length ? this.cont(rule, alt, pos + 1, up) : up;
      if (sym.dfa) {
        const t = sym.dfa.next(0, b);
        if (t >= 0) out.push({ dfa: sym.dfa, s: t, cont: after });
        if (sym.dfa.accepting[0] !== 1) return;
      } else {
        if (g.first[sym.rule]![b]) this.enterRule(sym.rule, after, b, out);
        if (g.minLen[sym.rule] !== 0) return;
      }
    }
    if (fallThrough) this.advance(up, b, out);
  }

  /** The interned continuation (rule, alt, pos) over `up`. */
  private cont(rule: number, alt: number, pos: number, up: Cont | null): Cont {
    const key = `${rule}.${alt}.${pos}.${up ? up.id : 0}`;
    let c = this.conts.get(key);
    if (!c) {
      const rest = this.grammar.seqMin[rule]![alt]![pos]! + (up ? up.rest : 0);
      c = { id: this.nextId++, rule, alt, pos, up, rest };
      this.conts.set(key, c);
    }
    return c;
  }
}

/** A state's identity: equal keys, the same future. */
export function stateKey(s: MatchState): string {
  return s.dfa === null ? 'init' : `${s.dfa.id}.${s.s}.${s.cont ? s.cont.id : 0}`;
}

export function dedupe(states: MatchState[]): MatchState[] {
  if (states.length < 2) return states;
  const seen = new Map<string, MatchState>();
  for (const s of states) {
    const k = stateKey(s);
    if (!seen.has(k)) seen.set(k, s);
  }
  return seen.size === states.length ? states : [...seen.values()];
}
