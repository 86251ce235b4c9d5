/**
 * Test helpers for grammars (grammar.ts) that do not go through the matcher, so that the matcher
 * and the compilers (gbnf.ts, schema.ts, ...) can be checked against a plain reading of a Grammar:
 *
 *  - `sampleGrammar`: random strings of the language, by random derivation.
 *  - `recognize`: membership, by an Earley parser over bytes whose terminals are DFA runs.
 *
 * Both are written for obviousness, not speed.
 */
import type { Grammar, Sym } from './grammar.ts';
import type { Rng } from '../../util/rng.ts';
import { walkDfa } from './sample.testing.ts';

/** Past this many output bytes a derivation only finishes, by the shortest way. */
const MAX_SAMPLE_BYTES = 4096;
/** A terminal's walk heads for acceptance after this many bytes. */
const TERMINAL_BYTES = 24;
/** Chances to stop at an accepting DFA state, one drawn per string: short and long runs both occur. */
const STOP_CHANCES = [0.05, 0.2, 0.5];

interface Heights {
  /** Per rule: the least height of a derivation tree of the rule's shortest length. */
  rule: Float64Array;
  /** Per rule and alternative: 1 + the highest rule in it, for alternatives of the shortest length (else Infinity). */
  alt: Float64Array[];
}

const heightsCache = new WeakMap<Grammar, Heights>();

/**
 * Following alternatives of least length alone need not terminate (`R ::= A R | ""` with A
 * able to be empty ties both ways), so finishing follows the shortest alternatives of least
 * height: every rule it enters is strictly lower, and so it ends.
 */
function heightsOf(g: Grammar): Heights {
  let h = heightsCache.get(g);
  if (h) return h;
  const rule = new Float64Array(g.size).fill(Infinity);
  const alt = g.rules.map((r) => new Float64Array(r.alts.length).fill(Infinity));
  for (let changed = true; changed; ) {
    changed = false;
    g.rules.forEach((r, i) => {
      r.alts.forEach((a, k) => {
        if (g.seqMin[i]![k]![0] !== g.minLen[i]) return;
        let top = 0;
        for (const s of a) if (s.rule !== undefined) top = Math.max(top, rule[s.rule]!);
        alt[i]![k] = top + 1;
        if (top + 1 < rule[i]!) {
          rule[i] = top + 1;
          changed = true;
        }
      });
    });
  }
  h = { rule, alt };
  heightsCache.set(g, h);
  return h;
}

/**
 * One random string of the grammar's language, as bytes. Alternatives are drawn uniformly while
 * the derivation is less than `maxDepth` rules deep (and the output under 4 KB); past that it
 * finishes by the shortest alternatives. Terminal strings come from a random walk over the DFA
 * (uniform over a state's byte ranges, then over the range) that stops at accepting states
 * with a chance drawn per string and, after a length budget, heads for acceptance along `dist`.
 */
export function sampleGrammar(g: Grammar, rng: Rng, maxDepth = 12): Uint8Array {
  const { rule: hRule, alt: hAlt } = heightsOf(g);
  const stop = STOP_CHANCES[rng.int(0, STOP_CHANCES.length)]!;
  const out: number[] = [];
  const stack: { syms: readonly Sym[]; pos: number; depth: number }[] = [];
  const enter = (r: number, depth: number) => {
    const alts = g.rules[r]!.alts;
    let a: number;
    if (depth < maxDepth && out.length < MAX_SAMPLE_BYTES) a = rng.int(0, alts.length);
    else {
      const finishing: number[] = [];
      alts.forEach((_, k) => {
        if (hAlt[r]![k] === hRule[r]) finishing.push(k);
      });
      a = finishing[rng.int(0, finishing.length)]!;
    }
    stack.push({ syms: alts[a]!, pos: 0, depth });
  };
  enter(g.root, 0);
  while (stack.length > 0) {
    const f = stack[stack.length - 1]!;
    if (f.pos === f.syms.length) {
      stack.pop();
      continue;
    }
    const s = f.syms[f.pos++]!;
    if (s.dfa) walkDfa(s.dfa, rng, stop, out.length >= MAX_SAMPLE_BYTES ? 0 : TERMINAL_BYTES, out);
    else enter(s.rule, f.depth + 1);
  }
  return Uint8Array.from(out);
}

/** An Earley item: alternative `alt` of `rule`, before symbol `dot`, begun at `origin`; `state` >= 0 when inside the terminal at `dot`. */
interface Item {
  readonly rule: number;
  readonly alt: number;
  readonly dot: number;
  readonly origin: number;
  readonly state: number;
}

/**
 * Whether `bytes` is in the grammar's language: an Earley recognizer whose scanner runs each
 * terminal's DFA one byte per position (an item inside a terminal carries its DFA state).
 * Empty rules are handled by remembering, per position, the rules completed there without
 * reading a byte, so an item predicting one of them later still advances over it. Right
 * recursion (every repetition in these grammars) would make plain Earley quadratic, since
 * finishing a string of n repeated items completes a chain of n items at every position;
 * Leo's memo completes the top of such a deterministic chain at once, keeping it linear.
 */
export function recognize(g: Grammar, bytes: Uint8Array): boolean {
  const n = bytes.length;
  const sets: Item[][] = [];
  const keys: Set<string>[] = [];
  const waiting: Map<number, Item[]>[] = [];
  const emptyDone: Set<number>[] = [];
  const leo: Map<number, Item | null>[] = [];
  const open = (i: number) => {
    sets[i] = [];
    keys[i] = new Set();
    waiting[i] = new Map();
    emptyDone[i] = new Set();
    leo[i] = new Map();
  };
  /**
   * Leo's topmost item for `rule` completing with origin j < i (set j is complete): while the
   * only item of set j waiting for the rule has it as its last symbol, completing the rule
   * completes that item, and so on up; the highest such completed item stands for the chain.
   * Null when the first level is not deterministic.
   */
  const topmost = (j0: number, rule0: number): Item | null => {
    const levels: { j: number; rule: number; done: Item }[] = [];
    const seen = new Set<string>();
    let j = j0;
    let rule = rule0;
    let top: Item | null = null;
    for (;;) {
      const memo = leo[j]!.get(rule);
      if (memo !== undefined) {
        top = memo;
        break;
      }
      const w = waiting[j]!.get(rule);
      const x = w?.length === 1 ? w[0]! : undefined;
      // (a repeated level would be left recursion, which Grammar refuses; stop rather than loop)
      if (!x || x.dot !== g.rules[x.rule]!.alts[x.alt]!.length - 1 || seen.has(`${j},${rule}`)) {
        leo[j]!.set(rule, null);
        break;
      }
      seen.add(`${j},${rule}`);
      levels.push({ j, rule, done: { ...x, dot: x.dot + 1 } });
      j = x.origin;
      rule = x.rule;
    }
    for (let k = levels.length - 1; k >= 0; k--) {
      top = top ?? levels[k]!.done;
      leo[levels[k]!.j]!.set(levels[k]!.rule, top);
    }
    return top;
  };
  const add = (i: number, it: Item) => {
    const key = `${it.rule},${it.alt},${it.dot},${it.origin},${it.state}`;
    if (keys[i]!.has(key)) return;
    keys[i]!.add(key);
    sets[i]!.push(it);
    const s = g.rules[it.rule]!.alts[it.alt]![it.dot];
    if (it.state < 0 && s?.rule !== undefined) {
      const list = waiting[i]!.get(s.rule);
      if (list) list.push(it);
      else waiting[i]!.set(s.rule, [it]);
    }
  };
  open(0);
  g.rules[g.root]!.alts.forEach((_, a) => add(0, { rule: g.root, alt: a, dot: 0, origin: 0, state: -1 }));
  for (let i = 0; i <= n; i++) {
    if (i < n) open(i + 1);
    const set = sets[i]!;
    for (let k = 0; k < set.length; k++) {
      const it = set[k]!;
      const syms = g.rules[it.rule]!.alts[it.alt]!;
      if (it.state >= 0) {
        const dfa = syms[it.dot]!.dfa!;
        if (dfa.accepting[it.state] === 1) add(i, { ...it, dot: it.dot + 1, state: -1 });
        if (i < n) {
          const q = dfa.next(it.state, bytes[i]!);
          if (q >= 0) add(i + 1, { ...it, state: q });
        }
      } else if (it.dot === syms.length) {
        if (it.origin === i) emptyDone[i]!.add(it.rule);
        const top = it.origin < i ? topmost(it.origin, it.rule) : null;
        if (top) add(i, top);
        // The list may grow while iterating (origin i): those items are advanced too.
        else for (const w of waiting[it.origin]!.get(it.rule) ?? []) add(i, { ...w, dot: w.dot + 1 });
      } else {
        const s = syms[it.dot]!;
        if (s.dfa) add(i, { ...it, state: 0 });
        else {
          g.rules[s.rule]!.alts.forEach((_, a) => add(i, { rule: s.rule, alt: a, dot: 0, origin: i, state: -1 }));
          if (emptyDone[i]!.has(s.rule)) add(i, { ...it, dot: it.dot + 1 });
        }
      }
    }
    if (i < n && sets[i + 1]!.length === 0) return false;
  }
  return sets[n]!.some((it) => it.rule === g.root && it.origin === 0 && it.state < 0 && it.dot === g.rules[g.root]!.alts[it.alt]!.length);
}
