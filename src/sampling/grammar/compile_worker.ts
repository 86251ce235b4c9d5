/**
 * Compiling a grammar off the event loop: a worker thread runs `compileSpec` and sends the result
 * back as plain data (the rules, and each terminal's Dfa as typed arrays), which the caller
 * rebuilds into a `Grammar`. A big pattern or bound can take the
 * compiler well past 50 ms; a server must not stall every other request meanwhile.
 *
 * This file is both sides: `GrammarCompiler` (the caller's handle on one worker, started on first
 * use) and, when loaded as a worker, the loop that answers it. The worker loads TypeScript through
 * tsx, as the CLI does (no build step).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parentPort, Worker, workerData } from 'node:worker_threads';
import { Dfa } from './dfa.ts';
import { Grammar, GrammarError, type Rule, type Sym } from './grammar.ts';
import { RegexError } from './regex.ts';
import { SchemaError } from './schema.ts';
import { compileSpec, type GrammarSpec } from './specs.ts';

/** A grammar as data: symbols are rule indices (>= 0) or -(k + 1) for terminal k. */
export interface WireGrammar {
  root: number;
  names: string[];
  alts: number[][][];
  dfas: { offsets: Uint32Array; lo: Uint8Array; hi: Uint8Array; to: Int32Array; accepting: Uint8Array; dist: Uint32Array }[];
}

interface WireError {
  name: string;
  message: string;
  keyword?: string;
  path?: string;
  construct?: string;
  position?: number;
}

export function toWire(g: Grammar): WireGrammar {
  const dfaIndex = new Map<Dfa, number>();
  const dfas: WireGrammar['dfas'] = [];
  const alts = g.rules.map((r) =>
    r.alts.map((a) =>
      a.map((s) => {
        if (!s.dfa) return s.rule!;
        let k = dfaIndex.get(s.dfa);
        if (k === undefined) {
          k = dfas.length;
          dfaIndex.set(s.dfa, k);
          const d = s.dfa;
          dfas.push({ offsets: d.offsets, lo: d.lo, hi: d.hi, to: d.to, accepting: d.accepting, dist: d.dist });
        }
        return -(k + 1);
      }),
    ),
  );
  return { root: g.root, names: g.rules.map((r) => r.name), alts, dfas };
}

export function fromWire(w: WireGrammar): Grammar {
  const dfas = w.dfas.map((d) => new Dfa(d.offsets, d.lo, d.hi, d.to, d.accepting, d.dist));
  const rules: Rule[] = w.names.map((name, i) => ({
    name,
    alts: w.alts[i]!.map((a) => a.map((x): Sym => (x >= 0 ? { rule: x } : { dfa: dfas[-x - 1]! }))),
  }));
  return new Grammar(rules, w.root);
}

function toWireError(err: unknown): WireError {
  if (err instanceof SchemaError) return { name: err.name, message: err.message, keyword: err.keyword, path: err.path };
  if (err instanceof RegexError) return { name: err.name, message: err.message, construct: err.construct, position: err.position };
  if (err instanceof GrammarError) return { name: err.name, message: err.message, construct: err.construct };
  return { name: 'Error', message: err instanceof Error ? err.message : String(err) };
}

function fromWireError(e: WireError): Error {
  switch (e.name) {
    case 'SchemaError': {
      // SchemaError's constructor appends the path; the message already carries it.
      const err = new SchemaError(e.keyword!, e.path!, '');
      err.message = e.message;
      return err;
    }
    case 'RegexError': {
      const err = new RegexError(e.construct!, e.position!, '');
      err.message = e.message;
      return err;
    }
    case 'GrammarError':
      return new GrammarError(e.construct!, e.message);
    default:
      return new Error(`grammar compiler: ${e.message}`);
  }
}

/** tsx's ESM register() (its package export for import; the CommonJS one resolves its files wrongly from a worker). */
function tsxEsmApi(): string {
  const require = createRequire(import.meta.url);
  const pkgPath = require.resolve('tsx/package.json');
  const pkg = require(pkgPath) as { exports: Record<string, { import: { default: string } }> };
  return pathToFileURL(join(dirname(pkgPath), pkg.exports['./esm/api']!.import.default)).href;
}

const BOOT = `
const { workerData } = require('node:worker_threads');
(async () => {
  const { register } = await import(workerData.tsx);
  register();
  await import(workerData.entry);
})();
`;

interface Pending {
  resolve(g: Grammar): void;
  reject(err: Error): void;
}

/** One compiler thread, started on first use; an idle one does not keep the process alive. */
export class GrammarCompiler {
  private worker: Worker | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;

  compile(spec: GrammarSpec): Promise<Grammar> {
    const worker = this.start();
    const id = this.nextId++;
    if (this.pending.size === 0) worker.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, spec });
    });
  }

  close(): void {
    const worker = this.worker;
    this.worker = null;
    if (worker) void worker.terminate();
    this.failAll(new Error('the grammar compiler was closed'));
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(BOOT, { eval: true, workerData: { tsx: tsxEsmApi(), entry: import.meta.url, grammarCompiler: true } });
    worker.unref();
    worker.on('message', (msg: { id: number; grammar?: WireGrammar; error?: WireError }) => {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (this.pending.size === 0) worker.unref();
      if (msg.grammar) {
        try {
          p.resolve(fromWire(msg.grammar));
        } catch (err) {
          p.reject(err as Error);
        }
      } else p.reject(fromWireError(msg.error!));
    });
    const fail = (err: Error) => {
      if (this.worker === worker) this.worker = null;
      this.failAll(err);
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the grammar compiler exited (code ${code})`)));
    this.worker = worker;
    return worker;
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}

// The worker's side (only in the thread started above: a test runner's own workers import this too).
if (parentPort && (workerData as { grammarCompiler?: boolean } | null)?.grammarCompiler === true) {
  const port = parentPort;
  port.on('message', ({ id, spec }: { id: number; spec: GrammarSpec }) => {
    try {
      // Copied, not transferred: the worker keeps shared terminals cached for the next compile.
      port.postMessage({ id, grammar: toWire(compileSpec(spec)) });
    } catch (err) {
      port.postMessage({ id, error: toWireError(err) });
    }
  });
}
