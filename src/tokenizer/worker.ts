/**
 * A worker thread that tokenizes, so that a long prompt never stalls the server's event loop.
 * It runs the same library on the same tokenizer.json as the main thread (both variants:
 * special tokens parsed, and plain text), so its ids are the ids `encode` gives.
 *
 * The worker's code is plain JavaScript given as a string (no TypeScript loader exists in a
 * worker), and it loads the library from the path the main thread resolved, so it works from any
 * working directory and under the test runner alike.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { EncodeRequest } from './steps.ts';

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { Tokenizer } = require(workerData.library);
const { tokenizerJson, config } = workerData;
let full = null;
let plain = null;
parentPort.on('message', ({ id, text, parseSpecial }) => {
  try {
    if (parseSpecial) full ??= new Tokenizer(tokenizerJson, config);
    else plain ??= new Tokenizer({ ...tokenizerJson, added_tokens: (tokenizerJson.added_tokens ?? []).filter((t) => !t.special) }, config);
    const ids = Int32Array.from((parseSpecial ? full : plain).encode(text, { add_special_tokens: false }).ids);
    parentPort.postMessage({ id, ids }, [ids.buffer]);
  } catch (err) {
    parentPort.postMessage({ id, error: String((err && err.message) || err) });
  }
});
`;

interface Pending {
  resolve(ids: number[]): void;
  reject(err: Error): void;
}

/** One worker, started on first use; requests are answered in order. */
export class EncoderWorker {
  private worker: Worker | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;

  /** `tokenizerJson` and `config` exactly as the main thread's Tokenizer got them. */
  constructor(
    private readonly tokenizerJson: unknown,
    private readonly config: unknown,
  ) {}

  encode(req: EncodeRequest): Promise<number[]> {
    const worker = this.start();
    const id = this.nextId++;
    // Referenced while it has work (the caller awaits it), unreferenced when idle.
    if (this.pending.size === 0) worker.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, text: req.text, parseSpecial: req.parseSpecial });
    });
  }

  /** Stops the worker (pending requests fail). A later encode starts a new one. */
  close(): void {
    const worker = this.worker;
    this.worker = null;
    if (worker) void worker.terminate();
    this.failAll(new Error('the tokenizer worker was closed'));
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const library = createRequire(import.meta.url).resolve('@huggingface/tokenizers');
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { library, tokenizerJson: this.tokenizerJson, config: this.config },
    });
    // An idle worker must not keep a finished CLI process alive.
    worker.unref();
    worker.on('message', (msg: { id: number; ids?: Int32Array; error?: string }) => {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (this.pending.size === 0) worker.unref();
      if (msg.ids) p.resolve(Array.from(msg.ids));
      else p.reject(new Error(`tokenizer worker: ${msg.error}`));
    });
    const fail = (err: Error) => {
      if (this.worker === worker) this.worker = null;
      this.failAll(err);
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the tokenizer worker exited (code ${code})`)));
    this.worker = worker;
    return worker;
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}
