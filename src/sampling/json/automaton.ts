/**
 * A byte-level pushdown automaton for JSON text that conforms to a compiled schema (schema.ts).
 *
 * A state is an immutable stack of frames (a linked list, top first): `step(state, byte)` gives
 * the states after one more byte, never mutating the old one, so the vocabulary walk (grammar.ts)
 * can branch one state into many tokens cheaply. `anyOf` makes the automaton nondeterministic: a
 * matcher holds a small set of states, one per option still alive.
 *
 * Frames:
 *   VALUE    a value of `node` is expected (leading whitespace allowed)
 *   OBJECT   inside an object with declared properties, emitted in declared order, optional ones
 *            skippable; the key is matched byte by byte against the properties still possible
 *   ANY_OBJ  inside an object with free keys and any values (json_object)
 *   ARRAY    inside an array
 *   STRING   inside a string: escapes (\" \\ \/ \b \f \n \r \t \uXXXX), no raw control
 *            characters, well-formed UTF-8 lead/continuation bytes
 *   LITERAL  matching one of several fixed JSON texts (enum, const, true/false/null)
 *   NUMBER   JSON number grammar (integers: no fraction or exponent)
 *   DONE     the root value is complete: only trailing whitespace, then the end of the turn
 *
 * Bounds, so that random weights cannot grow the output without end inside one construct:
 * at most MAX_WHITESPACE whitespace bytes in a row between tokens of the structure, at most
 * 16 integer digits, 16 fraction digits and 3 exponent digits in a number. Strings and arrays are
 * unbounded (max_tokens bounds them; the matcher's budget forces completion in time).
 *
 * `distance(state)` is the least number of bytes that complete the root value from the state;
 * every such shortest completion is ASCII except for declared keys and enum texts, and every byte
 * has a one-byte token (byte fallback), so `distance` tokens always suffice.
 */
import { requiredCost, type Property, type SchemaNode } from './schema.ts';

export const MAX_WHITESPACE = 20;
const MAX_INT_DIGITS = 16;
const MAX_FRAC_DIGITS = 16;
const MAX_EXP_DIGITS = 3;

// Frame kinds.
const VALUE = 0;
const OBJECT = 1;
const ANY_OBJ = 2;
const ARRAY = 3;
const STRING = 4;
const LITERAL = 5;
const NUMBER = 6;
const DONE = 7;

// Phases of OBJECT / ANY_OBJ / ARRAY.
const OPEN = 0; // after { or [
const KEY = 1; // inside a declared key
const COLON = 2; // after a key
const NEXT = 3; // after a value
const COMMA = 4; // after a comma

// Phases of NUMBER.
const N_START = 0;
const N_MINUS = 1;
const N_ZERO = 2;
const N_INT = 3;
const N_DOT = 4;
const N_FRAC = 5;
const N_E = 6;
const N_ESIGN = 7;
const N_EXP = 8;

type ObjectNode = Extract<SchemaNode, { kind: 'object' }>;

type Frame =
  | { t: typeof VALUE; node: SchemaNode; ws: number }
  /** `i`: in KEY the position is `pos` among `cands`; in COLON the matched property; in NEXT/COMMA the next property index. */
  | { t: typeof OBJECT; node: ObjectNode; phase: number; i: number; ws: number; pos: number; cands: readonly number[] }
  | { t: typeof ANY_OBJ; phase: number; ws: number }
  | { t: typeof ARRAY; items: SchemaNode; phase: number; ws: number }
  /** esc: a backslash was read; hex: \u digits still due; utf8: continuation bytes still due. */
  | { t: typeof STRING; esc: boolean; hex: number; utf8: number }
  | { t: typeof LITERAL; texts: readonly Uint8Array[]; cands: readonly number[]; pos: number }
  | { t: typeof NUMBER; integer: boolean; phase: number; digits: number }
  | { t: typeof DONE; ws: number };

export interface State {
  readonly f: Frame;
  readonly up: State | null;
}

const encoder = new TextEncoder();
const ANY_NODE: SchemaNode = { kind: 'any', id: -2, minLen: 1 };
const TRUE_FALSE = [encoder.encode('true'), encoder.encode('false')];
const NULL_TEXT = [encoder.encode('null')];
const ANY_LITERALS = [...TRUE_FALSE, ...NULL_TEXT];
const STRING_START: Frame = { t: STRING, esc: false, hex: 0, utf8: 0 };
const NO_CANDS: readonly number[] = [];

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON_B = 0x3a;
const COMMA_B = 0x2c;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const MINUS = 0x2d;

const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
/** Bytes allowed after a backslash (besides u). */
const SIMPLE_ESCAPES = new Set([...'"\\/bfnrt'].map((c) => c.charCodeAt(0)));

/** The start state for a root schema node. */
export function initialState(root: SchemaNode): State {
  return { f: { t: VALUE, node: root, ws: 0 }, up: { f: { t: DONE, ws: 0 }, up: null } };
}

/** Appends to `out` every state reachable from `s` by the byte `b` (none: `b` is not allowed). */
export function step(s: State, b: number, out: State[]): void {
  const f = s.f;
  switch (f.t) {
    case VALUE:
      if (isWs(b)) {
        if (f.ws < MAX_WHITESPACE) out.push({ f: { t: VALUE, node: f.node, ws: f.ws + 1 }, up: s.up });
        return;
      }
      startValue(f.node, b, s.up!, out);
      return;
    case STRING:
      stepString(s, f, b, out);
      return;
    case OBJECT:
      stepObject(s, f, b, out);
      return;
    case ANY_OBJ:
      stepAnyObject(s, f, b, out);
      return;
    case ARRAY:
      stepArray(s, f, b, out);
      return;
    case LITERAL:
      stepLiteral(s, f, b, out);
      return;
    case NUMBER: {
      const next = numberNext(f.integer, f.phase, f.digits, b);
      if (next) out.push({ f: next, up: s.up });
      else if (numberComplete(f.phase)) step(s.up!, b, out); // the number ended: the byte is the parent's
      return;
    }
    case DONE:
      if (isWs(b) && f.ws < MAX_WHITESPACE) out.push({ f: { t: DONE, ws: f.ws + 1 }, up: null });
      return;
  }
}

/** Every state reachable from any of `states` by all of `bytes` (duplicates removed). */
export function stepBytes(states: readonly State[], bytes: Uint8Array): State[] {
  let cur: State[] = [...states];
  for (const b of bytes) {
    const next: State[] = [];
    for (const s of cur) step(s, b, next);
    if (next.length === 0) return next;
    cur = next;
  }
  return dedupe(cur);
}

/** True when the root value may end here (the end-of-turn token is allowed). */
export function canFinish(s: State): boolean {
  for (let cur: State | null = s; cur; cur = cur.up) {
    const f = cur.f;
    if (f.t === DONE) return true;
    if (f.t === NUMBER && numberComplete(f.phase)) continue;
    if (f.t === LITERAL && f.cands.some((c) => f.texts[c]!.length === f.pos)) continue;
    return false;
  }
  return false;
}

/** The least number of bytes that complete the root value from `s`. */
export function distance(s: State): number {
  let d = 0;
  for (let cur: State | null = s; cur; cur = cur.up) d += frameDistance(cur.f);
  return d;
}

/** A string that identifies the state (equal keys: the same future). */
export function stateKey(s: State): string {
  const parts: string[] = [];
  for (let cur: State | null = s; cur; cur = cur.up) {
    const f = cur.f;
    switch (f.t) {
      case VALUE:
        parts.push(`v${f.node.id}.${f.ws}`);
        break;
      case OBJECT:
        parts.push(`o${f.node.id}.${f.phase}.${f.i}.${f.ws}.${f.pos}.${f.cands.join(',')}`);
        break;
      case ANY_OBJ:
        parts.push(`a${f.phase}.${f.ws}`);
        break;
      case ARRAY:
        parts.push(`r${f.items.id}.${f.phase}.${f.ws}`);
        break;
      case STRING:
        parts.push(`s${f.esc ? 1 : 0}.${f.hex}.${f.utf8}`);
        break;
      case LITERAL:
        // Literal texts are identified by their content (shared arrays for true/false/null).
        parts.push(`l${f.pos}.${f.cands.map((c) => Buffer.from(f.texts[c]!).toString('hex')).join(',')}`);
        break;
      case NUMBER:
        parts.push(`n${f.integer ? 1 : 0}.${f.phase}.${f.digits}`);
        break;
      case DONE:
        parts.push(`d${f.ws}`);
        break;
    }
  }
  return parts.join('|');
}

export function dedupe(states: State[]): State[] {
  if (states.length < 2) return states;
  const seen = new Map<string, State>();
  for (const s of states) {
    const k = stateKey(s);
    if (!seen.has(k)) seen.set(k, s);
  }
  return [...seen.values()];
}

// ---------------------------------------------------------------------------

function startValue(node: SchemaNode, b: number, up: State, out: State[]): void {
  switch (node.kind) {
    case 'string':
      if (b === QUOTE) out.push({ f: STRING_START, up });
      return;
    case 'number':
    case 'integer': {
      const f = numberNext(node.kind === 'integer', N_START, 0, b);
      if (f) out.push({ f, up });
      return;
    }
    case 'boolean':
      startLiteral(TRUE_FALSE, b, up, out);
      return;
    case 'null':
      startLiteral(NULL_TEXT, b, up, out);
      return;
    case 'literal':
      startLiteral(node.texts, b, up, out);
      return;
    case 'array':
      if (b === LBRACKET) out.push({ f: { t: ARRAY, items: node.items, phase: OPEN, ws: 0 }, up });
      return;
    case 'object':
      if (b === LBRACE) out.push({ f: { t: OBJECT, node, phase: OPEN, i: 0, ws: 0, pos: 0, cands: NO_CANDS }, up });
      return;
    case 'anyObject':
      if (b === LBRACE) out.push({ f: { t: ANY_OBJ, phase: OPEN, ws: 0 }, up });
      return;
    case 'any':
      if (b === LBRACE) out.push({ f: { t: ANY_OBJ, phase: OPEN, ws: 0 }, up });
      else if (b === LBRACKET) out.push({ f: { t: ARRAY, items: ANY_NODE, phase: OPEN, ws: 0 }, up });
      else if (b === QUOTE) out.push({ f: STRING_START, up });
      else if (b === MINUS || isDigit(b)) out.push({ f: numberNext(false, N_START, 0, b)!, up });
      else startLiteral(ANY_LITERALS, b, up, out);
      return;
    case 'anyOf':
      for (const o of node.options) startValue(o, b, up, out);
      return;
  }
}

function startLiteral(texts: readonly Uint8Array[], b: number, up: State, out: State[]): void {
  const f: Extract<Frame, { t: typeof LITERAL }> = { t: LITERAL, texts, cands: texts.map((_, i) => i), pos: 0 };
  stepLiteral({ f, up }, f, b, out);
}

function stepLiteral(s: State, f: Extract<Frame, { t: typeof LITERAL }>, b: number, out: State[]): void {
  const { texts, pos } = f;
  const next = f.cands.filter((c) => texts[c]!.length > pos && texts[c]![pos] === b);
  if (next.length > 0) {
    const p = pos + 1;
    if (next.every((c) => texts[c]!.length === p)) out.push(s.up!); // complete, nothing longer possible
    else out.push({ f: { t: LITERAL, texts, cands: next, pos: p }, up: s.up });
    return;
  }
  // A complete literal (e.g. 1 where 12 was also possible) ends here; the byte is the parent's.
  if (f.cands.some((c) => texts[c]!.length === pos)) step(s.up!, b, out);
}

function stepString(s: State, f: Extract<Frame, { t: typeof STRING }>, b: number, out: State[]): void {
  if (f.utf8 > 0) {
    if (b >= 0x80 && b <= 0xbf) out.push({ f: { t: STRING, esc: false, hex: 0, utf8: f.utf8 - 1 }, up: s.up });
    return;
  }
  if (f.hex > 0) {
    if (isHex(b)) out.push({ f: f.hex === 1 ? STRING_START : { t: STRING, esc: false, hex: f.hex - 1, utf8: 0 }, up: s.up });
    return;
  }
  if (f.esc) {
    if (SIMPLE_ESCAPES.has(b)) out.push({ f: STRING_START, up: s.up });
    else if (b === 0x75) out.push({ f: { t: STRING, esc: false, hex: 4, utf8: 0 }, up: s.up });
    return;
  }
  if (b === QUOTE) out.push(s.up!);
  else if (b === BACKSLASH) out.push({ f: { t: STRING, esc: true, hex: 0, utf8: 0 }, up: s.up });
  else if (b < 0x20) return; // raw control characters are not allowed in JSON strings
  else if (b < 0x80) out.push(s); // an ordinary character: the same state
  else if (b >= 0xc2 && b <= 0xdf) out.push({ f: { t: STRING, esc: false, hex: 0, utf8: 1 }, up: s.up });
  else if (b >= 0xe0 && b <= 0xef) out.push({ f: { t: STRING, esc: false, hex: 0, utf8: 2 }, up: s.up });
  else if (b >= 0xf0 && b <= 0xf4) out.push({ f: { t: STRING, esc: false, hex: 0, utf8: 3 }, up: s.up });
}

/** Per object node: the keys possible at each property index, and the least bytes the rest needs. */
interface ObjectTables {
  /** cands[i]: the properties that may come next at index i (up to and including the first required one). */
  cands: number[][];
  /** cost[i]: requiredCost(props, i). */
  cost: number[];
}
const tables = new WeakMap<Property[], ObjectTables>();

function tablesOf(node: ObjectNode): ObjectTables {
  let t = tables.get(node.props);
  if (!t) {
    const n = node.props.length;
    const cands: number[][] = [];
    const cost: number[] = [];
    for (let i = 0; i <= n; i++) {
      const c: number[] = [];
      for (let j = i; j < n; j++) {
        c.push(j);
        if (node.props[j]!.required) break;
      }
      cands.push(c);
      cost.push(requiredCost(node.props, i));
    }
    t = { cands, cost };
    tables.set(node.props, t);
  }
  return t;
}

function stepObject(s: State, f: Extract<Frame, { t: typeof OBJECT }>, b: number, out: State[]): void {
  const up = s.up;
  const props = f.node.props;
  const ws = () => {
    if (f.ws < MAX_WHITESPACE) out.push({ f: { ...f, ws: f.ws + 1 }, up });
  };
  const mayClose = (i: number) => tablesOf(f.node).cost[i] === 0;
  const openKey = (i: number) => {
    const cands = tablesOf(f.node).cands[i]!;
    if (cands.length) out.push({ f: { t: OBJECT, node: f.node, phase: KEY, i, ws: 0, pos: 1, cands }, up });
  };
  switch (f.phase) {
    case OPEN:
    case COMMA:
      if (isWs(b)) ws();
      else if (b === QUOTE) openKey(f.i);
      else if (b === RBRACE && f.phase === OPEN && mayClose(0)) out.push(up!);
      return;
    case KEY: {
      const next = f.cands.filter((c) => props[c]!.key[f.pos] === b);
      if (next.length === 0) return;
      const pos = f.pos + 1;
      const done = next.find((c) => props[c]!.key.length === pos);
      if (done !== undefined) out.push({ f: { t: OBJECT, node: f.node, phase: COLON, i: done, ws: 0, pos: 0, cands: NO_CANDS }, up });
      else out.push({ f: { t: OBJECT, node: f.node, phase: KEY, i: f.i, ws: 0, pos, cands: next }, up });
      return;
    }
    case COLON:
      if (isWs(b)) ws();
      else if (b === COLON_B) {
        const parent: State = { f: { t: OBJECT, node: f.node, phase: NEXT, i: f.i + 1, ws: 0, pos: 0, cands: NO_CANDS }, up };
        out.push({ f: { t: VALUE, node: props[f.i]!.node, ws: 0 }, up: parent });
      }
      return;
    case NEXT:
      if (isWs(b)) ws();
      else if (b === COMMA_B && tablesOf(f.node).cands[f.i]!.length > 0) {
        out.push({ f: { t: OBJECT, node: f.node, phase: COMMA, i: f.i, ws: 0, pos: 0, cands: NO_CANDS }, up });
      } else if (b === RBRACE && mayClose(f.i)) out.push(up!);
      return;
  }
}

function stepAnyObject(s: State, f: Extract<Frame, { t: typeof ANY_OBJ }>, b: number, out: State[]): void {
  const up = s.up;
  if (isWs(b)) {
    if (f.ws < MAX_WHITESPACE) out.push({ f: { t: ANY_OBJ, phase: f.phase, ws: f.ws + 1 }, up });
    return;
  }
  switch (f.phase) {
    case OPEN:
    case COMMA:
      if (b === QUOTE) out.push({ f: STRING_START, up: { f: { t: ANY_OBJ, phase: COLON, ws: 0 }, up } });
      else if (b === RBRACE && f.phase === OPEN) out.push(up!);
      return;
    case COLON:
      if (b === COLON_B) out.push({ f: { t: VALUE, node: ANY_NODE, ws: 0 }, up: { f: { t: ANY_OBJ, phase: NEXT, ws: 0 }, up } });
      return;
    case NEXT:
      if (b === COMMA_B) out.push({ f: { t: ANY_OBJ, phase: COMMA, ws: 0 }, up });
      else if (b === RBRACE) out.push(up!);
      return;
  }
}

function stepArray(s: State, f: Extract<Frame, { t: typeof ARRAY }>, b: number, out: State[]): void {
  const up = s.up;
  if (isWs(b)) {
    if (f.ws < MAX_WHITESPACE) out.push({ f: { t: ARRAY, items: f.items, phase: f.phase, ws: f.ws + 1 }, up });
    return;
  }
  if (b === RBRACKET) {
    out.push(up!);
    return;
  }
  const after: State = { f: { t: ARRAY, items: f.items, phase: NEXT, ws: 0 }, up };
  if (f.phase === OPEN) startValue(f.items, b, after, out);
  else if (b === COMMA_B) out.push({ f: { t: VALUE, node: f.items, ws: 0 }, up: after });
}

function numberComplete(phase: number): boolean {
  return phase === N_ZERO || phase === N_INT || phase === N_FRAC || phase === N_EXP;
}

function numberNext(integer: boolean, phase: number, digits: number, b: number): Frame | null {
  const to = (p: number, d: number): Frame => ({ t: NUMBER, integer, phase: p, digits: d });
  const digit = isDigit(b);
  const fractionOrExponent = () => {
    if (integer) return null;
    if (b === 0x2e) return to(N_DOT, 0);
    if (b === 0x65 || b === 0x45) return to(N_E, 0);
    return null;
  };
  switch (phase) {
    case N_START:
    case N_MINUS:
      if (b === MINUS && phase === N_START) return to(N_MINUS, 0);
      if (b === 0x30) return to(N_ZERO, 1);
      if (digit) return to(N_INT, 1);
      return null;
    case N_ZERO:
      return fractionOrExponent();
    case N_INT:
      if (digit) return digits < MAX_INT_DIGITS ? to(N_INT, digits + 1) : null;
      return fractionOrExponent();
    case N_DOT:
      return digit ? to(N_FRAC, 1) : null;
    case N_FRAC:
      if (digit) return digits < MAX_FRAC_DIGITS ? to(N_FRAC, digits + 1) : null;
      return b === 0x65 || b === 0x45 ? to(N_E, 0) : null;
    case N_E:
      if (b === 0x2b || b === MINUS) return to(N_ESIGN, 0);
      return digit ? to(N_EXP, 1) : null;
    case N_ESIGN:
      return digit ? to(N_EXP, 1) : null;
    case N_EXP:
      return digit && digits < MAX_EXP_DIGITS ? to(N_EXP, digits + 1) : null;
  }
  return null;
}

function frameDistance(f: Frame): number {
  switch (f.t) {
    case VALUE:
      return f.node.minLen;
    case STRING:
      return 1 + f.utf8 + f.hex + (f.esc ? 1 : 0);
    case LITERAL: {
      let m = Infinity;
      for (const c of f.cands) m = Math.min(m, f.texts[c]!.length - f.pos);
      return m;
    }
    case NUMBER:
      return numberComplete(f.phase) ? 0 : 1;
    case ARRAY:
      return 1;
    case ANY_OBJ:
      return f.phase === OPEN || f.phase === NEXT ? 1 : f.phase === COLON ? 3 : 5; // } | :0} | "":0}
    case DONE:
      return 0;
    case OBJECT: {
      const props = f.node.props;
      const { cands, cost } = tablesOf(f.node);
      // Finishing property j: its key (rest), colon, shortest value, then the required ones after it and }.
      const via = (j: number, keyLeft: number) => keyLeft + 1 + props[j]!.node.minLen + cost[j + 1]! + 1;
      switch (f.phase) {
        case OPEN:
          return cost[0] === 0 ? 1 : cost[0]! - 1 + 1; // the first property has no comma
        case KEY:
          return Math.min(...f.cands.map((j) => via(j, props[j]!.key.length - f.pos)));
        case COLON:
          return via(f.i, 0);
        case NEXT:
          return cost[f.i]! + 1;
        case COMMA:
          return Math.min(...cands[f.i]!.map((j) => via(j, props[j]!.key.length)));
      }
      return 0;
    }
  }
}
