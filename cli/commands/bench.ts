import { writeFileSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import { getGpu, requestFineTimestamps } from '../../src/gpu/device.ts';
import { KernelPlanError, parsePlan, type KernelPlan } from '../../src/kernels/plan.ts';
import { formatResult, runBenchmark } from '../../bench/e2e.ts';
import { intOption, quantizeOption } from './options.ts';
import type { QuantFormat } from '../../src/gpu/buffers.ts';
import { resolveModelDir } from '../../src/generator.ts';

interface BenchCliOptions {
  model: string;
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
}

function planList(value: string): Partial<KernelPlan>[] {
  try {
    return value.split(';').map((p) => parsePlan(p, '--plans'));
  } catch (e) {
    if (e instanceof KernelPlanError) throw new InvalidArgumentError(e.message);
    throw e;
  }
}

function lengthList(value: string): number[] {
  const parts = value.split(',').map((s) => s.trim());
  const ids = parts.map(Number);
  if (parts.length === 0 || parts.some((p) => !/^\d+$/.test(p)) || ids.some((n) => n < 1)) {
    throw new InvalidArgumentError(`--prompt-lengths must be a comma-separated list of positive integers, e.g. 128,512; got "${value}"`);
  }
  return ids;
}

export function registerBench(program: Command): void {
  program
    .command('bench')
    .description('measure load time, time to first token, prefill and decode speed, peak memory, each against the device limit measured in the same run')
    .requiredOption('--model <dir>', 'Hugging Face model folder (bench/synthetic.ts writes random ones of real shapes)')
    .option('--prompt-lengths <list>', 'prompt lengths to prefill, comma-separated', lengthList, [128, 512])
    .option('--decode-tokens <n>', 'tokens to decode greedily', intOption('--decode-tokens', 1, 1_000_000), 128)
    .option('--decode-prompt <n>', 'prompt length before decoding (default: the shortest prompt length)', intOption('--decode-prompt', 1, 1_000_000))
    .option('--repeats <n>', 'measurements per figure (the median is reported)', intOption('--repeats', 1, 100), 1)
    .option('--seed <n>', 'seed of the random prompt ids (default: from the clock, printed)', intOption('--seed', 0, 2 ** 32 - 1))
    .option('--copy-mib <n>', 'size of the buffer copied to measure bandwidth', intOption('--copy-mib', 1, 4096), 128)
    .option('--max-chunk <n>', 'most tokens per prefill dispatch (default: the model default)', intOption('--max-chunk', 1, 4096))
    .option('--plans <list>', "kernel plans to compare, ';'-separated, each in OPENCHAT_KERNELS syntax, e.g. 'matvec=rows;matvec=subgroup' (measured interleaved; default: the device's plan)", planList)
    .option('--profile [tokens]', 'also time every kernel on the GPU (timestamp queries) over this many decode tokens per plan (default 8)', intOption('--profile', 1, 10_000))
    .option('--json <file>', 'also write every figure to FILE as JSON')
    .option('--quantize <format>', 'quantize the weight matrices to q8 or q4 while loading', quantizeOption)
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
      });
      process.stdout.write(formatResult(result) + '\n');
      if (opts.json) writeFileSync(opts.json, JSON.stringify(result, null, 2) + '\n');
    });
}
