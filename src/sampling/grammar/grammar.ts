/**
 * The one grammar form every structured output compiles to: a context-free grammar whose terminals
 * are byte automata (dfa.ts). JSON schemas (schema.ts), regular expressions (regex.ts), choices and
 * GBNF grammars (gbnf.ts) all end here, and one pushdown matcher (matcher.ts) runs them.
 *
 *   rule := alternative | alternative | ...      alternative := symbol symbol ...  (may be empty)
 *   symbol := a terminal (one Dfa: a run of bytes it accepts) | a rule
 *
 * Repetition is written as right recursion (`items ::= item items | ""`); the matcher treats a rule
 * at the end of an alternative as a tail call, so repeating does not grow its stack. Left
 * recursion (a rule that can reach itself before reading a byte) is refused: the matcher expands
 * rules eagerly and would not terminate.
 *
 * `build()` also derives what the matcher needs: the shortest length of each rule's language (so
 * the matcher knows how many bytes complete an output), and alternatives that can never finish are
 * dropped so that every path the matcher takes can still end.
 */
import type { Dfa } from './dfa.ts';

export type Sym = { readonly dfa: Dfa; readonly rule?: undefined } | { readonly rule: number; readonly dfa?: undefined };

export interface Rule {
  readonly name: string;
  readonly alts: readonly (readonly Sym[])[];
}

/** A grammar that cannot be run: `construct` names the offending part (a rule name, a keyword). */
export class GrammarError extends Error {
  constructor(
    readonly construct: string,
    message: string,
  ) {
    super(message);
    this.name = 'GrammarError';
  }
}

export class GrammarBuilder {
  private readonly names: string[] = [];
  private readonly defs: (Sym[][] | undefined)[] = [];
  private readonly byName = new Map<string, number>();

  /** The rule called `name`, declared now if new (its alternatives come with `define`). */
  rule(name: string): number {
    let id = this.byName.get(name);
    if (id === undefined) {
      id = this.names.length;
      this.names.push(name);
      this.defs.push(undefined);
      this.byName.set(name, id);
    }
    return id;
  }

  /** A rule with a fresh name built from `hint`, for the rules a compiler invents. */
  fresh(hint: string): number {
    let name = hint;
    for (let k = 1; this.byName.has(name); k++) name = `${hint}-${k}`;
    return this.rule(name);
  }

  nameOf(rule: number): string {
    return this.names[rule]!;
  }

  define(rule: number, alts: Sym[][]): number {
    if (this.defs[rule] !== undefined) throw new GrammarError(this.names[rule]!, `rule "${this.names[rule]}" is defined twice`);
    this.defs[rule] = alts;
    return rule;
  }

  /** A new rule with these alternatives. */
  add(hint: string, alts: Sym[][]): number {
    return this.define(this.fresh(hint), alts);
  }

  static t(dfa: Dfa): Sym {
    return { dfa };
  }

  static r(rule: number): Sym {
    return { rule };
  }

  build(root: number): Grammar {
    const undefinedRule = this.defs.findIndex((d) => d === undefined);
    if (undefinedRule >= 0) throw new GrammarError(this.names[undefinedRule]!, `rule "${this.names[undefinedRule]}" is used but never defined`);
    return new Grammar(
      this.names.map((name, i) => ({ name, alts: this.defs[i]!.map((a) => a.filter((s) => !(s.dfa && s.dfa.onlyEmpty))) })),
      root,
    );
  }
}

export class Grammar {
  readonly rules: readonly Rule[];
  /** Fewest bytes of each rule's language. */
  readonly minLen: Float64Array;
  /** seqMin[rule][alt][pos]: fewest bytes of the alternative's symbols from `pos` to its end. */
  readonly seqMin: readonly (readonly Float64Array[])[];
  /** first[rule]: the bytes a rule's non-empty strings can start with (256 flags). */
  readonly first: readonly Uint8Array[];

  constructor(
    rules: readonly Rule[],
    readonly root: number,
  ) {
    const minLen = shortestLengths(rules);
    if (minLen[root] === Infinity) throw new GrammarError(rules[root]!.name, `rule "${rules[root]!.name}" can never finish (every alternative recurses without end)`);
    // Alternatives that can never finish would trap the matcher: drop them.
    this.rules = rules.map((r) => ({ name: r.name, alts: r.alts.filter((a) => a.every((s) => s.dfa || minLen[s.rule!] !== Infinity)) }));
    this.minLen = minLen;
    this.seqMin = this.rules.map((r) =>
      r.alts.map((a) => {
        const m = new Float64Array(a.length + 1);
        for (let p = a.length - 1; p >= 0; p--) m[p] = m[p + 1]! + symMin(a[p]!, minLen);
        return m;
      }),
    );
    checkLeftRecursion(this.rules, minLen);
    this.first = firstSets(this.rules, minLen);
  }

  get size(): number {
    return this.rules.length;
  }
}

function symMin(s: Sym, minLen: Float64Array): number {
  return s.dfa ? s.dfa.dist[0]! : minLen[s.rule!]!;
}

/** Shortest string length per rule, by fixed-point iteration from +Infinity (recursion). */
function shortestLengths(rules: readonly Rule[]): Float64Array {
  const m = new Float64Array(rules.length).fill(Infinity);
  for (let changed = true; changed; ) {
    changed = false;
    rules.forEach((r, i) => {
      let best = Infinity;
      for (const a of r.alts) {
        let sum = 0;
        for (const s of a) sum += symMin(s, m);
        best = Math.min(best, sum);
      }
      if (best < m[i]!) {
        m[i] = best;
        changed = true;
      }
    });
  }
  return m;
}

/** A rule reachable from itself through symbols that can all be empty: left recursion. */
function checkLeftRecursion(rules: readonly Rule[], minLen: Float64Array): void {
  // left[i]: the rules that can start rule i (reached before any byte is read).
  const left = rules.map((r) => {
    const out = new Set<number>();
    for (const a of r.alts) {
      for (const s of a) {
        if (s.dfa) {
          if (!s.dfa.accepting[0]) break;
          continue; // a terminal that may be empty: what follows can still be first
        }
        out.add(s.rule!);
        if (minLen[s.rule!]! > 0) break;
      }
    }
    return [...out];
  });
  const state = new Uint8Array(rules.length); // 0 unseen, 1 on the path, 2 done
  const visit = (i: number, path: number[]): void => {
    state[i] = 1;
    path.push(i);
    for (const j of left[i]!) {
      if (state[j] === 1) {
        const cycle = [...path.slice(path.indexOf(j)), j].map((k) => rules[k]!.name);
        throw new GrammarError(rules[j]!.name, `rule "${rules[j]!.name}" is left-recursive (${cycle.join(' -> ')}); write the repetition on the right instead`);
      }
      if (state[j] === 0) visit(j, path);
    }
    path.pop();
    state[i] = 2;
  };
  for (let i = 0; i < rules.length; i++) if (state[i] === 0) visit(i, []);
}

function firstSets(rules: readonly Rule[], minLen: Float64Array): Uint8Array[] {
  const first = rules.map(() => new Uint8Array(256));
  const dfaFirst = new Map<number, Uint8Array>();
  const firstOf = (d: Dfa) => {
    let f = dfaFirst.get(d.id);
    if (!f) dfaFirst.set(d.id, (f = d.firstBytes()));
    return f;
  };
  for (let changed = true; changed; ) {
    changed = false;
    rules.forEach((r, i) => {
      const f = first[i]!;
      for (const a of r.alts) {
        for (const s of a) {
          const add = s.dfa ? firstOf(s.dfa) : first[s.rule!]!;
          for (let b = 0; b < 256; b++) {
            if (add[b] && !f[b]) {
              f[b] = 1;
              changed = true;
            }
          }
          const nullable = s.dfa ? s.dfa.accepting[0] === 1 : minLen[s.rule!] === 0;
          if (!nullable) break;
        }
      }
    });
  }
  return first;
}
