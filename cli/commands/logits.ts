import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { getGpu } from '../../src/gpu/device.ts';
import { MistralModel } from '../../src/model/model.ts';
import { CpuModel } from '../../src/model/cpu.ts';
import { OpenChatTokenizer } from '../../src/tokenizer/index.ts';
import { resolveModelDir } from '../../src/generator.ts';
import { loadConfig } from '../../src/model/config.ts';
import { loadLora, type LoraWeights } from '../../src/model/lora.ts';
import { addSlidingWindowOption, intOption, MODEL_HELP, quantizeOption } from './options.ts';
import type { QuantFormat } from '../../src/gpu/buffers.ts';
import { loadProgress } from './progress.ts';

interface LogitsOptions {
  model?: string;
  ids?: string;
  prompt?: string;
  out?: string;
  top: number;
  greedy?: number;
  cpu?: boolean;
  lora?: string;
  quantize?: QuantFormat;
  slidingWindow?: number;
}

function parseIds(text: string): number[] {
  const ids = text.split(/[\s,]+/).filter(Boolean).map(Number);
  if (ids.length === 0 || ids.some((n) => !Number.isInteger(n) || n < 0)) {
    throw new Error(`--ids must be a comma-separated list of token ids, e.g. --ids 1,420,6316; got "${text}"`);
  }
  return ids;
}

/** The k largest entries of one row, best first. */
function topOf(row: Float32Array, k: number): number[] {
  const best: number[] = [];
  for (let j = 0; j < row.length; j++) {
    if (best.length < k || row[j]! > row[best[best.length - 1]!]!) {
      let at = best.length;
      while (at > 0 && row[best[at - 1]!]! < row[j]!) at--;
      best.splice(at, 0, j);
      if (best.length > k) best.pop();
    }
  }
  return best;
}

/** The two forward passes behind one small interface: all logits of a sequence, then greedy steps. */
interface Runner {
  vocab: number;
  contextLength: number;
  all(ids: number[]): Promise<Float32Array>;
  /** Runs one more token through the KV cache and returns the argmax of its logits. */
  next(id: number): Promise<number>;
  close(): void;
}

async function gpuRunner(dir: string, lora: LoraWeights | undefined, opts: LogitsOptions): Promise<Runner> {
  const progress = loadProgress(dir);
  const model = await MistralModel.load(await getGpu(), dir, { onProgress: progress.onProgress, quantize: opts.quantize, slidingWindow: opts.slidingWindow });
  progress.done();
  // The adapter stays unmerged on the device, as the server runs it.
  const adapter = lora && model.addAdapter(lora);
  return {
    vocab: model.config.vocab_size,
    contextLength: model.contextLength,
    all: async (ids) => (await model.forward(ids, { kind: 'all-logits' }, adapter)).logits!,
    next: async (id) => (await model.forward([id], { kind: 'argmax' }, adapter)).argmax!,
    close: () => model.destroy(),
  };
}

async function cpuRunner(dir: string, lora: LoraWeights | undefined, opts: LogitsOptions): Promise<Runner> {
  // The reference merges the adapter into the (quantized, then dequantized) weights: W + scale * B A.
  const model = await CpuModel.load(dir, { lora, quantize: opts.quantize, slidingWindow: opts.slidingWindow });
  return {
    vocab: model.config.vocab_size,
    contextLength: model.config.max_position_embeddings,
    all: async (ids) => model.forward(ids),
    next: async (id) => topOf(model.forward([id]), 1)[0]!,
    close: () => {},
  };
}

export function registerLogits(program: Command): void {
  const cmd = program
    .command('logits')
    .description('for researchers: float32 logits of every position, top-k per position, greedy continuation')
    .option('--model <path>', MODEL_HELP)
    .option('--ids <list>', 'comma-separated token ids to run (no BOS added)')
    .option('--prompt <text>', 'text to tokenize (BOS added, no chat template)')
    .option('--out <file>', 'write logits as float32 little-endian, row-major [positions, vocab_size]')
    .option('--top <k>', 'print the k most likely next tokens at each position', intOption('--top', 0, 100), 5)
    .option('--greedy <n>', 'continue n tokens by argmax through the KV-cache decode path; print their ids as JSON', intOption('--greedy', 0, 100000))
    .option('--lora <dir>', 'run under this LoRA adapter (a Hugging Face PEFT folder); with --cpu it is merged into the weights')
    .option('--cpu', 'run the plain-TypeScript reference forward pass instead of WebGPU (slow; for cross-checking)')
    .option('--quantize <format>', 'quantize the weight matrices to q8 or q4 while loading (with --cpu: the same weights, dequantized plainly)', quantizeOption);
  addSlidingWindowOption(cmd)
    .action(async (opts: LogitsOptions) => {
      if ((opts.ids === undefined) === (opts.prompt === undefined)) throw new Error('give exactly one of --ids or --prompt');
      const dir = resolveModelDir(opts.model);
      const tokenizer = await OpenChatTokenizer.load(dir);
      const ids = opts.ids !== undefined ? parseIds(opts.ids) : tokenizer.encode(opts.prompt!, { addBos: true });
      // The adapter is checked against config.json before any weights load.
      const lora = opts.lora === undefined ? undefined : await loadLora(opts.lora, await loadConfig(dir, undefined, { slidingWindow: opts.slidingWindow }));
      const runner = opts.cpu ? await cpuRunner(dir, lora, opts) : await gpuRunner(dir, lora, opts);
      const vocab = runner.vocab;
      const greedy = opts.greedy ?? 0;
      if (ids.length + greedy > runner.contextLength) {
        throw new Error(`${ids.length} ids + ${greedy} greedy tokens exceed the context length ${runner.contextLength}`);
      }
      const logits = await runner.all(ids);
      if (opts.out) {
        writeFileSync(opts.out, new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength));
        process.stderr.write(`wrote ${ids.length} x ${vocab} float32 logits to ${opts.out}\n`);
      }
      if (opts.top > 0) {
        ids.forEach((id, pos) => {
          const row = logits.subarray(pos * vocab, (pos + 1) * vocab);
          const tops = topOf(row, opts.top).map((j) => `${j} ${JSON.stringify(tokenizer.idToToken(j) ?? '?')} ${row[j]!.toFixed(4)}`);
          process.stdout.write(`${pos}\t${id} ${JSON.stringify(tokenizer.idToToken(id) ?? '?')}\t-> ${tops.join(' | ')}\n`);
        });
      }
      if (greedy > 0) {
        const last = logits.subarray((ids.length - 1) * vocab);
        const out: number[] = [topOf(last, 1)[0]!];
        while (out.length < greedy) out.push(await runner.next(out[out.length - 1]!));
        process.stdout.write(JSON.stringify(out) + '\n');
      }
      runner.close();
    });
}
