import { writeFileSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import { getGpu, requestFineTimestamps } from '../../src/gpu/device.ts';
import { KernelPlanError, parsePlan, type KernelPlan } from '../../src/kernels/plan.ts';
import { DEFAULT_STREAMS, formatResult, runBenchmark } from '../../bench/e2e.ts';
import { addSlidingWindowOption, intOption, MODEL_HELP, numberOption, quantizeOption } from './options.ts';
import type { QuantFormat } from '../../src/gpu/buffers.ts';
import { DEFAULT_KV_CACHE_GB, resolveModelDir } from '../../src/generator.ts';

interface BenchCliOptions {
  model?: string;
  promptLengths: number[];
  decodeTokens: number;
  decodePrompt?: number;
  repeats: number;
  seed?: number;
  copyMib: number;
  maxChunk?: number;
  plans?: Partial<KernelPlan>[];
  profile?: number | true;
  json?: string;
  quantize?: QuantFormat;
  slidingWindow?: number;
  streams: number[];
  kvCacheGb?: number;
}

function planList(value: string): Partial<KernelPlan>[] {
  try {
    return value.split(';').map((p) => parsePlan(p, '--plans'));
  } catch (e) {
    if (e instanceof KernelPlanError) throw new InvalidArgumentError(e.message);
    throw e;
  }
}

/** A comma-separated list of positive integers, for `flag`. */
function positiveList(flag: string, example: string): (value: string) => number[] {
  return (value: string) => {
    const parts = value.split(',').map((s) => s.trim());
    if (parts.some((p) => !/^\d+$/.test(p)) || parts.map(Number).some((n) => n < 1)) {
      throw new InvalidArgumentError(`${flag} must be a comma-separated list of positive integers, e.g. ${example}; got "${value}"`);
    }
    return parts.map(Number);
  };
}

export function registerBench(program: Command): void {
  const cmd = program
    .command('bench')
    .description(
      'measure load time, time to first token, prefill and decode speed, concurrent streams and peak memory, through the scheduler the server runs, ' +
        'each single-stream figure against the device limit measured in the same run',
    )
    .option('--model <path>', `${MODEL_HELP}; bench/synthetic.ts writes random ones of real shapes`)
    .option('--prompt-lengths <list>', 'prompt lengths to prefill, comma-separated', positiveList('--prompt-lengths', '128,512'), [128, 512])
    .option('--decode-tokens <n>', 'tokens each request decodes greedily after its first (max_tokens n + 1)', intOption('--decode-tokens', 1, 1_000_000), 128)
    .option('--decode-prompt <n>', 'prompt length of the decoding requests and of every stream (default: the shortest prompt length)', intOption('--decode-prompt', 1, 1_000_000))
    .option(
      '--streams <list>',
      `concurrent request counts to measure, comma-separated: aggregate decode tokens/s, TTFT and inter-token latency p50/p99 at each (default ${DEFAULT_STREAMS.join(',')})`,
      positiveList('--streams', '1,8,32'),
      [...DEFAULT_STREAMS],
    )
    .option(
      '--kv-cache-gb <gib>',
      `KV-cache memory of the Generator (default ${DEFAULT_KV_CACHE_GB}); when it holds fewer sequences than the largest stream count, the other requests queue`,
      numberOption('--kv-cache-gb', 0, 1 << 20, true),
    )
    .option('--repeats <n>', 'measurements per figure (the median is reported)', intOption('--repeats', 1, 100), 1)
    .option('--seed <n>', 'seed of the random prompt ids (default: from the clock, printed)', intOption('--seed', 0, 2 ** 32 - 1))
    .option('--copy-mib <n>', 'size of the buffer copied to measure bandwidth', intOption('--copy-mib', 1, 4096), 128)
    .option(
      '--max-chunk <n>',
      "most rows of one step: prompt tokens per prefill step, and the activation buffers (default: the plan's prefillChunk)",
      intOption('--max-chunk', 1, 4096),
    )
    .option('--plans <list>', "kernel plans to compare, ';'-separated, each in OPENCHAT_KERNELS syntax, e.g. 'matvec=rows;matvec=subgroup' (measured interleaved; default: the device's plan)", planList)
    .option(
      '--profile [tokens]',
      "also time every kernel on the GPU (timestamp queries) over one more request per plan through the scheduler: its prompt's prefill steps and this many decode steps (default 8)",
      intOption('--profile', 1, 10_000),
    )
    .option('--json <file>', 'also write every figure to FILE as JSON')
    .option('--quantize <format>', 'quantize the weight matrices to q8 or q4 while loading', quantizeOption);
  addSlidingWindowOption(cmd)
    .action(async (opts: BenchCliOptions) => {
      const modelDir = resolveModelDir(opts.model);
      if (opts.profile) requestFineTimestamps();
      const gpu = await getGpu();
      const seed = opts.seed ?? Date.now() >>> 0;
      const result = await runBenchmark(gpu, modelDir, {
        promptLengths: opts.promptLengths,
        decodeTokens: opts.decodeTokens,
        decodePrompt: opts.decodePrompt,
        repeats: opts.repeats,
        seed,
        copyBytes: opts.copyMib * 2 ** 20,
        maxChunk: opts.maxChunk,
        plans: opts.plans,
        profileTokens: opts.profile === true ? 8 : (opts.profile ?? 0),
        log: (line) => process.stderr.write(line + '\n'),
        quantize: opts.quantize,
        streams: opts.streams,
        kvCacheGb: opts.kvCacheGb,
        slidingWindow: opts.slidingWindow,
      });
      process.stdout.write(formatResult(result) + '\n');
      if (opts.json) writeFileSync(opts.json, JSON.stringify(result, null, 2) + '\n');
    });
}
