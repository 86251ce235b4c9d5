/**
 * End-to-end benchmark: how fast a model folder runs, and how close that is to
 * what the device could do at best, both measured in the same process.
 *
 * The limits (a roofline):
 *  - memory: a big buffer copied on the device, timed, gives bytes moved per
 *    second (bytes read + bytes written). Decoding one token must read every
 *    weight once and the keys/values it attends to, so (bytes read per token) /
 *    (bandwidth) is the fastest a token can possibly come.
 *  - compute: a kernel of independent f32 fused multiply-adds gives the peak
 *    FLOP/s; prefill does about 2 FLOPs per weight per token, plus attention.
 * A figure's limit is the larger of the two times (the slower resource bounds
 * it); the ratio says what fraction of that limit the engine reaches. Both are
 * measured before loading and again at the end, and the better of the two is
 * the limit: other processes slowing one measurement must not flatter the ratios.
 *
 * Benchmarks print numbers; they never fail on speed.
 */
import { totalmem, cpus, loadavg } from 'node:os';
import type { Gpu, AdapterReport } from '../src/gpu/device.ts';
import { bytesPerElement, createStorageBuffer, quantBytes, readU32, type QuantFormat, type WeightDType } from '../src/gpu/buffers.ts';
import { Encoder, getPipeline, params } from '../src/gpu/encoder.ts';
import { expectedTensors, loadConfig, type ModelConfig } from '../src/model/config.ts';
import { folderQuantization, quantizationFor, quantizedMatrices, scalesName, type Quantization } from '../src/model/quantized.ts';
import { MistralModel } from '../src/model/model.ts';
import { Checkpoint } from '../src/model/safetensors.ts';
import { Rng } from '../src/util/rng.ts';
import { formatPlan, type KernelPlan } from '../src/kernels/plan.ts';
import { GpuProfiler, type KernelTiming, type StepTiming } from '../src/gpu/profiler.ts';

// ---------------------------------------------------------------------------
// Device limits
// ---------------------------------------------------------------------------

/**
 * copy: dst[i] = src[i] over arrays of vec4<u32> (16 bytes per element).
 * Dispatch: any number of 256-wide workgroups; a grid-stride loop covers the
 * whole array, so the count only needs to keep every CPU thread busy.
 */
const COPY_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = arrayLength(&src);
  let stride = nwg.x * 256u;
  for (var i = gid.x; i < n; i += stride) {
    dst[i] = src[i];
  }
}
`;

/**
 * fma: each invocation runs p.iters rounds of 8 independent chains of
 * x = fma(x, a, b) on vec4<f32> (2 FLOPs per lane per fma), so the arithmetic
 * units, not memory or dependency latency, set the pace. a and b come from a
 * uniform so the compiler cannot fold the loop; the chains are summed into
 * out[invocation] so it cannot drop them. FLOPs = invocations * iters * 8 * 4 * 2.
 */
const FMA_WGSL = /* wgsl */ `
struct Params { iters: u32, a: f32, b: f32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let s = f32(gid.x & 1023u) * 1e-4;
  let a = vec4<f32>(p.a);
  let b = vec4<f32>(p.b);
  var x0 = vec4<f32>(s, s + 0.1, s + 0.2, s + 0.3);
  var x1 = x0 + 0.01; var x2 = x0 + 0.02; var x3 = x0 + 0.03;
  var x4 = x0 + 0.04; var x5 = x0 + 0.05; var x6 = x0 + 0.06; var x7 = x0 + 0.07;
  for (var i = 0u; i < p.iters; i++) {
    x0 = fma(x0, a, b); x1 = fma(x1, a, b); x2 = fma(x2, a, b); x3 = fma(x3, a, b);
    x4 = fma(x4, a, b); x5 = fma(x5, a, b); x6 = fma(x6, a, b); x7 = fma(x7, a, b);
  }
  out[gid.x] = ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7));
}
`;

export interface Roofline {
  /** Bytes read + bytes written per second by queue copyBufferToBuffer. */
  copyBytesPerSecond: number;
  /** The same by a WGSL copy kernel (how shaders see memory). */
  kernelCopyBytesPerSecond: number;
  /** The larger of the two: the memory limit used below. */
  bandwidth: number;
  /** f32 FLOP/s of independent fused multiply-adds. */
  flopsPerSecond: number;
  /**
   * An empty submission followed by a 4-byte read-back: the fixed cost every
   * decode step pays at least once, however small the model (not part of the limits).
   */
  roundTripSeconds: number;
  /** Size of each copy measured. */
  copyBytes: number;
  /** Wall time of measuring all of this, compilation included. */
  seconds: number;
}

async function timed(gpu: Gpu, record: () => void): Promise<number> {
  const t0 = performance.now();
  record();
  await gpu.device.queue.onSubmittedWorkDone();
  return (performance.now() - t0) / 1000;
}

/**
 * Times `run(reps)` with reps chosen so one measurement lasts about `target`
 * seconds (bounded), best of `trials`: the best run is the one least disturbed
 * by everything else on the machine.
 */
async function bestRate(gpu: Gpu, workPerRep: number, run: (reps: number) => void, target = 0.25, trials = 3): Promise<number> {
  await timed(gpu, () => run(1)); // first touch of the buffers, compilation
  const one = await timed(gpu, () => run(1));
  const reps = Math.max(1, Math.min(64, Math.ceil(target / Math.max(one, 1e-6))));
  let best = 0;
  for (let t = 0; t < trials; t++) {
    const s = await timed(gpu, () => run(reps));
    best = Math.max(best, (workPerRep * reps) / s);
  }
  return best;
}

/** Measures the device's copy bandwidth and f32 FMA throughput. */
export async function measureRoofline(gpu: Gpu, opts: { copyBytes?: number } = {}): Promise<Roofline> {
  const started = performance.now();
  const limit = gpu.report.limits.maxStorageBufferBindingSize;
  const copyBytes = Math.floor(Math.min(opts.copyBytes ?? 128 * 2 ** 20, limit) / 16) * 16;
  const src = createStorageBuffer(gpu, copyBytes, 'bench.copy.src');
  const dst = createStorageBuffer(gpu, copyBytes, 'bench.copy.dst');
  try {
    // Give the source real contents, so no driver can skip untouched pages.
    const pattern = new Uint32Array(Math.min(copyBytes, 16 * 2 ** 20) / 4);
    for (let i = 0; i < pattern.length; i++) pattern[i] = Math.imul(i, 2654435761) >>> 0;
    for (let off = 0; off < copyBytes; off += pattern.byteLength) {
      gpu.device.queue.writeBuffer(src, off, pattern, 0, Math.min(pattern.length, (copyBytes - off) / 4));
    }

    const copyBytesPerSecond = await bestRate(gpu, 2 * copyBytes, (reps) => {
      const enc = gpu.device.createCommandEncoder();
      for (let r = 0; r < reps; r++) enc.copyBufferToBuffer(src, 0, dst, 0, copyBytes);
      gpu.device.queue.submit([enc.finish()]);
    });

    const copyKernel = getPipeline(gpu, COPY_WGSL, 'main', {}, 'bench.copy');
    // About four elements per invocation: enough workgroups to spread over every thread.
    const groups = Math.min(Math.ceil(copyBytes / 16 / 256 / 4), gpu.report.limits.maxComputeWorkgroupsPerDimension);
    const kernelCopyBytesPerSecond = await bestRate(gpu, 2 * copyBytes, (reps) => {
      const enc = new Encoder(gpu);
      for (let r = 0; r < reps; r++) enc.dispatch(copyKernel, null, [src, dst], [groups]);
      enc.submit();
    });

    const fmaKernel = getPipeline(gpu, FMA_WGSL, 'main', {}, 'bench.fma');
    const fmaGroups = 1024;
    const iters = 1024;
    const out = createStorageBuffer(gpu, fmaGroups * 64 * 16, 'bench.fma.out');
    const flopsPerDispatch = fmaGroups * 64 * iters * 8 * 4 * 2;
    const flopsPerSecond = await bestRate(gpu, flopsPerDispatch, (reps) => {
      const enc = new Encoder(gpu);
      for (let r = 0; r < reps; r++) enc.dispatch(fmaKernel, params([iters, { f32: 0.999 }, { f32: 1e-3 }]), [out], [fmaGroups]);
      enc.submit();
    });
    out.destroy();

    const word = createStorageBuffer(gpu, 16, 'bench.roundtrip');
    let roundTripSeconds = Infinity;
    for (let i = 0; i < 10; i++) {
      const t = performance.now();
      new Encoder(gpu).submit();
      await readU32(gpu, word, 1);
      roundTripSeconds = Math.min(roundTripSeconds, (performance.now() - t) / 1000);
    }
    word.destroy();

    return {
      roundTripSeconds,
      copyBytesPerSecond,
      kernelCopyBytesPerSecond,
      bandwidth: Math.max(copyBytesPerSecond, kernelCopyBytesPerSecond),
      flopsPerSecond,
      copyBytes,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    src.destroy();
    dst.destroy();
  }
}

// ---------------------------------------------------------------------------
// What a forward pass must do at least
// ---------------------------------------------------------------------------

/** Byte and FLOP counts of a model, from its config and the sizes of its stored tensors. */
export class Workload {
  /** Bytes of all decoder-layer weight matrices (q, k, v, o, gate, up, down of every layer). */
  readonly layerMatrixBytes: number;
  /** Parameters in those matrices. */
  readonly layerMatrixParams: number;
  readonly lmHeadBytes: number;
  /** One row of embed_tokens: all a token reads of the table. */
  readonly embedRowBytes: number;
  /** Norm weights, held as f32 on the device. */
  readonly normBytes: number;
  readonly parameters: number;
  readonly dtype: string;

  /**
   * `tensors`: the checkpoint's stored tensors (their dtypes); `quant`: how the matrices sit on
   * the device when quantized (a quantized folder's, or --quantize's), null when as stored.
   * Parameters come from the config's shapes, bytes from how each matrix is held on the device,
   * so that a quantized folder's packed codes and scales count as the weights they encode.
   */
  constructor(readonly config: ModelConfig, tensors: Map<string, { dtype: string }>, quant: Quantization | null) {
    const quantized = quant ? quantizedMatrices(config, quant) : new Map<string, QuantFormat>();
    const deviceBytes = (name: string, shape: number[]): number => {
      const f = quantized.get(name);
      if (f) return quantBytes(f, shape[0]!, shape[1]!);
      return shape.reduce((a, b) => a * b, 1) * bytesPerElement(tensors.get(name)!.dtype as WeightDType);
    };
    let bytes = 0;
    let paramsN = 0;
    let all = 0;
    for (const [name, shape] of expectedTensors(config)) {
      const n = shape.reduce((a, b) => a * b, 1);
      all += n;
      if (name.startsWith('model.layers.') && shape.length === 2) {
        bytes += deviceBytes(name, shape);
        paramsN += n;
      }
    }
    const vocab = [config.vocab_size, config.hidden_size];
    this.layerMatrixBytes = bytes;
    this.layerMatrixParams = paramsN;
    this.lmHeadBytes = deviceBytes(config.tie_word_embeddings ? 'model.embed_tokens.weight' : 'lm_head.weight', vocab);
    this.embedRowBytes = deviceBytes('model.embed_tokens.weight', vocab) / config.vocab_size;
    this.normBytes = (2 * config.num_hidden_layers + 1) * config.hidden_size * 4;
    this.parameters = all;
    const floats = [...new Set([...tensors].filter(([n, t]) => t.dtype !== 'u8' && !n.endsWith('.scales')).map(([, t]) => t.dtype))].sort().join('+');
    this.dtype = quant && quantized.size > 0 && tensors.has(scalesName([...quantized.keys()][0]!))
      ? `${quant.format} (embed_tokens ${quant.embed_tokens ?? floats}, lm_head ${quant.lm_head ?? quant.embed_tokens ?? floats}, the rest ${floats})`
      : floats;
  }

  /** Keys a query at position `pos` attends to, its own included. */
  keysSeen(pos: number): number {
    const w = this.config.sliding_window;
    return w === null ? pos + 1 : Math.min(pos + 1, w);
  }

  /** Bytes of keys and values (f32 cache) read by one token's attention at `pos`, all layers. */
  kvBytesRead(pos: number): number {
    const c = this.config;
    return 2 * c.num_hidden_layers * this.keysSeen(pos) * c.num_key_value_heads * c.head_dim * 4;
  }

  /** FLOPs of one token at `pos` through the decoder layers (matmuls and attention; norms and the like are noise). */
  layerFlops(pos: number): number {
    const c = this.config;
    const attention = c.num_hidden_layers * c.num_attention_heads * c.head_dim * this.keysSeen(pos) * 4; // q.k and p.v
    return 2 * this.layerMatrixParams + attention;
  }

  get lmHeadFlops(): number {
    return 2 * this.config.vocab_size * this.config.hidden_size;
  }

  /** Bytes a decode step at `pos` must read: every weight it uses once, and the cache it attends to. */
  decodeBytes(pos: number): number {
    return this.layerMatrixBytes + this.lmHeadBytes + this.embedRowBytes + this.normBytes + this.kvBytesRead(pos);
  }

  /**
   * Fastest possible time of a prefill of `tokens` tokens from position 0, run in
   * chunks of `chunk` (each chunk reads the layer weights once; lm_head runs once,
   * for the last position), under the given limits.
   */
  prefillLimit(tokens: number, chunk: number, r: Roofline): { seconds: number; bound: 'memory' | 'compute' } {
    let flops = this.lmHeadFlops;
    let kv = 0;
    for (let p = 0; p < tokens; p++) {
      flops += this.layerFlops(p);
      kv += this.kvBytesRead(p);
    }
    const bytes = Math.ceil(tokens / chunk) * (this.layerMatrixBytes + this.normBytes) + this.lmHeadBytes + tokens * this.embedRowBytes + kv;
    return bound(bytes / r.bandwidth, flops / r.flopsPerSecond);
  }

  /** Fastest possible time of decoding one token at each of `positions`. */
  decodeLimit(positions: number[], r: Roofline): { seconds: number; bound: 'memory' | 'compute' } {
    let mem = 0;
    let comp = 0;
    for (const p of positions) {
      mem += this.decodeBytes(p) / r.bandwidth;
      comp += (this.layerFlops(p) + this.lmHeadFlops) / r.flopsPerSecond;
    }
    return bound(mem, comp);
  }
}

function bound(memorySeconds: number, computeSeconds: number): { seconds: number; bound: 'memory' | 'compute' } {
  return memorySeconds >= computeSeconds ? { seconds: memorySeconds, bound: 'memory' } : { seconds: computeSeconds, bound: 'compute' };
}

// ---------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------

export interface BenchOptions {
  /** Prompt lengths to prefill, each with fresh random token ids. */
  promptLengths: number[];
  /** Tokens to decode greedily (argmax fed back), after a prompt of `decodePrompt` tokens. */
  decodeTokens: number;
  /** Prompt before decoding; default: the shortest of promptLengths. */
  decodePrompt?: number;
  /** Measurements per figure; the median is reported. */
  repeats?: number;
  seed: number;
  /** Bytes per copy in the bandwidth measurement (at most one storage binding). */
  copyBytes?: number;
  /** Tokens per prefill dispatch (the model's default when absent). */
  maxChunk?: number;
  /**
   * Kernel plans to compare, each forced over the device's plan ({} = the device's own);
   * their measurements are interleaved round by round, so they share the machine's noise.
   */
  plans?: Partial<KernelPlan>[];
  /** After the measurements, this many decode steps per plan with GPU timestamps per kernel (0: none). */
  profileTokens?: number;
  /** Progress lines (to stderr in the CLI). */
  log?: (line: string) => void;
  /** Quantize the weights while loading (ModelOptions.quantize). */
  quantize?: QuantFormat;
}

export interface Figure {
  measured: number;
  limit: number;
  /** Fraction of the limit reached: limit/measured for times, measured/limit for rates and sizes. */
  ratio: number;
  boundBy: string;
}

export interface PrefillResult {
  promptTokens: number;
  /** Seconds from handing over the ids to holding the first generated token id (median). */
  timeToFirstToken: Figure;
  tokensPerSecond: Figure;
  /** Seconds of each repeat. */
  samples: number[];
}

export interface DecodeResult {
  tokens: number;
  startPosition: number;
  tokensPerSecond: Figure;
  secondsPerToken: number;
  /** Bytes a decode step reads at the mean position (weights + KV cache). */
  bytesPerToken: number;
  /** Seconds of each decode step of the last repeat. */
  samples: number[];
}

export interface ProfileResult {
  plan: string;
  tokens: number;
  /** Summed over the profiled tokens. */
  kernels: KernelTiming[];
  steps: StepTiming[];
  /** Wall time of each profiled step (forward call to token in hand). */
  wallSeconds: number[];
}

export interface BenchResult {
  date: string;
  device: Pick<AdapterReport, 'description' | 'vendor' | 'architecture' | 'device' | 'isSoftware'> & {
    cpuCores: number;
    hostMemoryBytes: number;
    /** 1-minute load average at the start and the end: other processes on the machine skew every figure. */
    loadAverage: [number, number];
  };
  node: string;
  model: {
    dir: string;
    architecture: string;
    parameters: number;
    dtype: string;
    weightBytes: number;
    /** The weights on the device: less than weightBytes when quantized at load. */
    weightDeviceBytes: number;
    quantize?: QuantFormat;
    kvCacheBytes: number;
    contextLength: number;
    maxChunk: number;
  };
  options: { promptLengths: number[]; decodeTokens: number; decodePrompt: number; repeats: number; seed: number };
  /** The kernel plan of `prefill` and `decode` (src/kernels/plan.ts syntax). */
  plan: string;
  /** Every plan measured, the first being `plan` (the same figures as prefill and decode). */
  plans: { plan: string; prefill: PrefillResult[]; decode: DecodeResult }[];
  /** Per plan, with --profile: GPU time per kernel over the profiled decode steps. */
  profile?: ProfileResult[];
  /** The better of the two measurements, field by field. */
  roofline: Roofline;
  /** Before loading, and after the measurements. */
  rooflineRuns: [Roofline, Roofline];
  load: Figure & { bytesPerSecond: number };
  warmup: { seconds: number; compileSeconds: number };
  prefill: PrefillResult[];
  decode: DecodeResult;
  memory: {
    peakRss: Figure;
    rssAfterLoadBytes: number;
    /** Weights plus KV cache: what must be resident at least (device memory is host memory on a software adapter). */
    deviceBytes: number;
  };
  totalSeconds: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function timeFigure(measured: number, limit: { seconds: number; bound: string }): Figure {
  return { measured, limit: limit.seconds, ratio: limit.seconds / measured, boundBy: limit.bound };
}

function rateFigure(measured: number, limit: number, boundBy: string): Figure {
  return { measured, limit, ratio: measured / limit, boundBy };
}

const maxRssBytes = () => process.resourceUsage().maxRSS * 1024; // maxRSS is in KiB

/**
 * Loads `dir`, measures the device's roofline, then prefill and decode speed.
 * The model is destroyed afterwards; the device stays.
 */
export async function runBenchmark(gpu: Gpu, dir: string, opts: BenchOptions): Promise<BenchResult> {
  const started = performance.now();
  const loadAtStart = loadavg()[0]!;
  const log = opts.log ?? (() => {});
  const repeats = Math.max(1, opts.repeats ?? 1);
  const promptLengths = [...opts.promptLengths];
  if (promptLengths.length === 0 || promptLengths.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new Error(`prompt lengths must be positive integers; got [${promptLengths}]`);
  }
  const decodePrompt = opts.decodePrompt ?? Math.min(...promptLengths);
  const config = loadConfig(dir);
  // Allocate only the context the run uses (positions 0 .. needed-1): on a
  // software adapter the KV cache is host memory too.
  // The warm-up decodes one token after each prompt; --profile decodes one more, then its tokens.
  const needed = Math.max(...promptLengths.map((n) => n + 1), decodePrompt + opts.decodeTokens, decodePrompt + 1 + (opts.profileTokens ?? 0));
  if (needed > config.max_position_embeddings) {
    throw new Error(`the run needs ${needed} positions, more than max_position_embeddings ${config.max_position_embeddings}`);
  }

  const ckpt = Checkpoint.open(dir);
  const folderQuant = folderQuantization(dir);
  const work = new Workload(config, ckpt.tensors, folderQuant ?? (opts.quantize ? quantizationFor(config, opts.quantize) : null));
  ckpt.close();

  // The roofline is measured before loading and again at the end; each limit is
  // the better of the two, so one measurement disturbed by other processes on
  // the machine does not lower the limit (and flatter the ratios).
  const rooflineRun = async (when: string) => {
    log(`roofline (${when}): timing a ${((opts.copyBytes ?? 128 * 2 ** 20) / 2 ** 20).toFixed(0)} MiB copy and an FMA kernel...`);
    const r = await measureRoofline(gpu, { copyBytes: opts.copyBytes });
    log(
      `  copy ${(r.copyBytesPerSecond / 1e9).toFixed(2)} GB/s, kernel copy ${(r.kernelCopyBytesPerSecond / 1e9).toFixed(2)} GB/s, ` +
        `FMA ${(r.flopsPerSecond / 1e9).toFixed(1)} GFLOP/s (${r.seconds.toFixed(1)} s)`,
    );
    return r;
  };
  const rooflineFirst = await rooflineRun('before loading');

  log(`loading ${dir} (${(ckpt.totalBytes / 1e9).toFixed(2)} GB)...`);
  const t0 = performance.now();
  let lastLog = t0;
  const model = await MistralModel.load(gpu, dir, {
    contextLength: needed,
    maxChunk: opts.maxChunk,
    quantize: opts.quantize,
    onProgress: (p) => {
      const now = performance.now();
      if (now - lastLog > 5000) {
        lastLog = now;
        log(`  ${(p.bytesDone / 1e9).toFixed(2)} / ${(p.bytesTotal / 1e9).toFixed(2)} GB, ${p.seconds.toFixed(0)} s`);
      }
    },
  });
  const loadSeconds = (performance.now() - t0) / 1000;
  const rssAfterLoadBytes = maxRssBytes();
  log(`  loaded in ${loadSeconds.toFixed(2)} s; peak RSS so far ${(rssAfterLoadBytes / 1e9).toFixed(2)} GB`);

  try {
    const rng = new Rng(opts.seed);
    const randomIds = (n: number) => Array.from({ length: n }, () => rng.int(0, config.vocab_size));
    const chunk = model.maxChunk;

    // Warm-up: every chunk shape the measured prompts will use, then a decode step,
    // so that pipeline compilation (seconds each on lavapipe) is not timed below.
    // Running the same shapes again warm tells compilation apart from the work itself.
    const shapes = new Set<number>();
    for (const n of [...promptLengths, decodePrompt]) {
      shapes.add(Math.min(n, chunk));
      if (n > chunk && n % chunk) shapes.add(n % chunk);
    }
    const plans = opts.plans && opts.plans.length > 0 ? opts.plans : [{}];
    const planNames = plans.map((p) => {
      model.replan(p);
      return formatPlan(model.plan);
    });
    const warmRound = async () => {
      const t = performance.now();
      for (const p of plans) {
        model.replan(p);
        for (const n of shapes) {
          model.reset();
          const r = await model.forward(randomIds(n), { kind: 'argmax' });
          await model.forward([r.argmax!], { kind: 'argmax' });
        }
      }
      return (performance.now() - t) / 1000;
    };
    log(`kernel plan${plans.length > 1 ? 's (interleaved)' : ''}: ${planNames.join('  |  ')}`);
    log(`warm-up (chunk shapes ${[...shapes].join(', ')} and a decode step${plans.length > 1 ? ', each plan' : ''})...`);
    const warmFirst = await warmRound();
    const warmAgain = await warmRound();
    log(`  ${warmFirst.toFixed(2)} s (the same again, compiled: ${warmAgain.toFixed(2)} s)`);

    const prefillSamples = plans.map(() => promptLengths.map((n) => ({ n, samples: [] as number[] })));
    for (let li = 0; li < promptLengths.length; li++) {
      const n = promptLengths[li]!;
      for (let r = 0; r < repeats; r++) {
        for (let pi = 0; pi < plans.length; pi++) {
          model.replan(plans[pi]!);
          model.reset();
          const ids = randomIds(n); // fresh ids: nothing cached or memoized helps
          const t = performance.now();
          const out = await model.forward(ids, { kind: 'argmax' });
          prefillSamples[pi]![li]!.samples.push((performance.now() - t) / 1000);
          if (out.argmax === undefined || out.argmax < 0 || out.argmax >= config.vocab_size) throw new Error(`prefill returned token ${out.argmax}`);
        }
      }
      plans.forEach((_, pi) => {
        const ttft = median(prefillSamples[pi]![li]!.samples);
        log(`  prefill ${n}${plans.length > 1 ? ` [${planNames[pi]}]` : ''}: ${ttft.toFixed(3)} s to first token, ${(n / ttft).toFixed(1)} tokens/s`);
      });
    }

    // Decode: greedy, each step's argmax fed back, one token per forward pass.
    const decodeSamples = plans.map(() => [] as number[]);
    const perRound = plans.map(() => [] as number[]);
    for (let r = 0; r < repeats; r++) {
      for (let pi = 0; pi < plans.length; pi++) {
        model.replan(plans[pi]!);
        model.reset();
        let token = (await model.forward(randomIds(decodePrompt), { kind: 'argmax' })).argmax!;
        const steps: number[] = [];
        for (let i = 0; i < opts.decodeTokens; i++) {
          const t = performance.now();
          token = (await model.forward([token], { kind: 'argmax' })).argmax!;
          steps.push((performance.now() - t) / 1000);
        }
        perRound[pi] = steps;
        decodeSamples[pi]!.push(steps.reduce((a, b) => a + b, 0));
        log(`  decode${plans.length > 1 ? ` [${planNames[pi]}]` : ''}: ${opts.decodeTokens} tokens in ${decodeSamples[pi]![r]!.toFixed(2)} s`);
      }
    }

    // GPU time per kernel: a few more decode steps per plan with timestamps on every dispatch.
    const profile: ProfileResult[] = [];
    for (let pi = 0; pi < plans.length && (opts.profileTokens ?? 0) > 0; pi++) {
      model.replan(plans[pi]!);
      model.reset();
      let token = (await model.forward(randomIds(decodePrompt), { kind: 'argmax' })).argmax!;
      await model.forward([token], { kind: 'argmax' }); // compile the one-pass-per-dispatch path's first step
      const prof = GpuProfiler.attach(gpu);
      const wall: number[] = [];
      try {
        for (let i = 0; i < opts.profileTokens!; i++) {
          const t = performance.now();
          token = (await model.forward([token], { kind: 'argmax' })).argmax!;
          wall.push((performance.now() - t) / 1000);
          await prof.endStep();
        }
      } finally {
        prof.detach();
      }
      profile.push({ plan: planNames[pi]!, tokens: opts.profileTokens!, kernels: prof.kernels(), steps: prof.steps(), wallSeconds: wall });
      log(`  profiled ${opts.profileTokens} decode steps [${planNames[pi]}]`);
    }
    // Before the second roofline run, whose copy buffers would add to the peak on a software adapter.
    const peak = maxRssBytes();
    const rooflineLast = await rooflineRun('after the measurements');
    const roofline: Roofline = {
      copyBytesPerSecond: Math.max(rooflineFirst.copyBytesPerSecond, rooflineLast.copyBytesPerSecond),
      kernelCopyBytesPerSecond: Math.max(rooflineFirst.kernelCopyBytesPerSecond, rooflineLast.kernelCopyBytesPerSecond),
      bandwidth: Math.max(rooflineFirst.bandwidth, rooflineLast.bandwidth),
      flopsPerSecond: Math.max(rooflineFirst.flopsPerSecond, rooflineLast.flopsPerSecond),
      roundTripSeconds: Math.min(rooflineFirst.roundTripSeconds, rooflineLast.roundTripSeconds),
      copyBytes: rooflineFirst.copyBytes,
      seconds: rooflineFirst.seconds + rooflineLast.seconds,
    };

    const positions = Array.from({ length: opts.decodeTokens }, (_, i) => decodePrompt + i);
    const decodeLimit = work.decodeLimit(positions, roofline);
    const meanPos = decodePrompt + Math.floor(opts.decodeTokens / 2);
    const byPlan = plans.map((_, pi) => {
      const prefill: PrefillResult[] = prefillSamples[pi]!.map(({ n, samples }) => {
        const ttft = median(samples);
        const limit = work.prefillLimit(n, chunk, roofline);
        return {
          promptTokens: n,
          timeToFirstToken: timeFigure(ttft, limit),
          tokensPerSecond: rateFigure(n / ttft, n / limit.seconds, limit.bound),
          samples,
        };
      });
      const decodeSeconds = median(decodeSamples[pi]!);
      const decode: DecodeResult = {
        tokens: opts.decodeTokens,
        startPosition: decodePrompt,
        tokensPerSecond: rateFigure(opts.decodeTokens / decodeSeconds, opts.decodeTokens / decodeLimit.seconds, decodeLimit.bound),
        secondsPerToken: decodeSeconds / opts.decodeTokens,
        bytesPerToken: work.decodeBytes(meanPos),
        samples: perRound[pi]!,
      };
      return { plan: planNames[pi]!, prefill, decode };
    });
    model.replan(plans[0]!);

    const host = totalmem();
    const result: BenchResult = {
      date: new Date().toISOString(),
      device: {
        description: gpu.report.description,
        vendor: gpu.report.vendor,
        architecture: gpu.report.architecture,
        device: gpu.report.device,
        isSoftware: gpu.report.isSoftware,
        cpuCores: cpus().length,
        hostMemoryBytes: host,
        loadAverage: [loadAtStart, loadavg()[0]!],
      },
      node: process.version,
      model: {
        dir,
        architecture: config.architecture,
        parameters: work.parameters,
        dtype: work.dtype,
        weightBytes: model.weightBytes,
        weightDeviceBytes: model.weightDeviceBytes,
        quantize: opts.quantize,
        kvCacheBytes: model.kvCacheBytes,
        contextLength: model.contextLength,
        maxChunk: chunk,
      },
      options: { promptLengths, decodeTokens: opts.decodeTokens, decodePrompt, repeats, seed: opts.seed },
      plan: planNames[0]!,
      plans: byPlan,
      profile: profile.length ? profile : undefined,
      roofline,
      rooflineRuns: [rooflineFirst, rooflineLast],
      load: {
        ...timeFigure(loadSeconds, { seconds: model.weightBytes / roofline.copyBytesPerSecond, bound: 'copy once' }),
        bytesPerSecond: model.weightBytes / loadSeconds,
      },
      warmup: { seconds: warmFirst, compileSeconds: Math.max(0, warmFirst - warmAgain) },
      prefill: byPlan[0]!.prefill,
      decode: byPlan[0]!.decode,
      memory: {
        peakRss: rateFigure(peak, host, 'host memory'),
        rssAfterLoadBytes,
        deviceBytes: model.weightDeviceBytes + model.kvCacheBytes,
      },
      totalSeconds: 0,
    };
    result.totalSeconds = (performance.now() - started) / 1000;
    return result;
  } finally {
    model.destroy();
  }
}

// ---------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------

/** Bytes in GB, or MB / kB for small amounts (tiny models). */
const gb = (n: number) => (n >= 1e8 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e5 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`);
const pct = (r: number) => (r >= 0.095 ? `${(100 * r).toFixed(0)}%` : `${(100 * r).toFixed(1)}%`);

function num(n: number): string {
  if (n >= 100) return n.toFixed(0);
  if (n >= 10) return n.toFixed(1);
  if (n >= 1) return n.toFixed(2);
  return n.toPrecision(3);
}

/** The result as a Markdown table (readable in a terminal, pasteable into RESULTS.md). */
export function formatResult(r: BenchResult): string {
  const m = r.model;
  const rf = r.roofline;
  const lines: string[] = [];
  lines.push(
    `model:    ${m.dir}: ${m.architecture}, ${(m.parameters / 1e9).toFixed(3)} B parameters, ${m.dtype}${m.quantize ? ` quantized to ${m.quantize} at load` : ''}, weights ${gb(m.weightBytes)}${m.quantize ? ` (${gb(m.weightDeviceBytes)} on the device)` : ''}, ` +
      `KV cache ${gb(m.kvCacheBytes)} (${m.contextLength} positions), prefill chunk ${m.maxChunk}`,
  );
  lines.push(
    `device:   ${r.device.description || r.device.device || '(unnamed)'}${r.device.isSoftware ? ' [software]' : ''}, ` +
      `${r.device.cpuCores} CPU cores, ${gb(r.device.hostMemoryBytes)} host memory, load average ${r.device.loadAverage.map((l) => l.toFixed(1)).join(' -> ')}; ` +
      `node ${r.node}; ${r.date}`,
  );
  lines.push(
    `roofline: copyBufferToBuffer ${(rf.copyBytesPerSecond / 1e9).toFixed(2)} GB/s, WGSL copy ${(rf.kernelCopyBytesPerSecond / 1e9).toFixed(2)} GB/s ` +
      `(bytes read + written, ${(rf.copyBytes / 2 ** 20).toFixed(0)} MiB buffers); f32 FMA ${(rf.flopsPerSecond / 1e9).toFixed(1)} GFLOP/s; ` +
      `submit + read-back round trip ${(rf.roundTripSeconds * 1000).toFixed(2)} ms (best of a run before loading and one at the end)`,
  );
  lines.push(`plan:     ${r.plans.map((p) => p.plan).join('  |  ')}${r.plans.length > 1 ? ' (measured interleaved, round by round)' : ''}`);
  lines.push(
    `warm-up:  ${r.warmup.seconds.toFixed(2)} s, of which pipeline compilation ~${r.warmup.compileSeconds.toFixed(2)} s (not counted below); ` +
      `seed ${r.options.seed}, ${r.options.repeats} repeat(s), median shown`,
  );
  lines.push('');
  lines.push('| figure | measured | limit | ratio | limit set by |');
  lines.push('|---|---:|---:|---:|---|');
  const row = (name: string, measured: string, limit: string, ratio: number, by: string) => lines.push(`| ${name} | ${measured} | ${limit} | ${pct(ratio)} | ${by} |`);
  row('load', `${num(r.load.measured)} s`, `${num(r.load.limit)} s`, r.load.ratio, `copying ${gb(m.weightBytes)} once (${gb(r.load.bytesPerSecond)}/s achieved)`);
  const tag = (plan: string) => (r.plans.length > 1 ? ` [${plan}]` : '');
  for (const { plan, prefill } of r.plans) {
    for (const p of prefill) {
      const by = p.tokensPerSecond.boundBy === 'compute' ? 'compute (FMA peak)' : 'memory (weights once per chunk)';
      row(`time to first token, ${p.promptTokens}-token prompt${tag(plan)}`, `${num(p.timeToFirstToken.measured)} s`, `${num(p.timeToFirstToken.limit)} s`, p.timeToFirstToken.ratio, by);
      row(`prefill tokens/s, ${p.promptTokens}-token prompt${tag(plan)}`, num(p.tokensPerSecond.measured), num(p.tokensPerSecond.limit), p.tokensPerSecond.ratio, by);
    }
  }
  for (const { plan, decode: d } of r.plans) {
    const dBy = d.tokensPerSecond.boundBy === 'memory' ? `memory (${gb(d.bytesPerToken)} read per token)` : 'compute (FMA peak)';
    row(`decode tokens/s, ${d.tokens} tokens after ${d.startPosition}${tag(plan)}`, num(d.tokensPerSecond.measured), num(d.tokensPerSecond.limit), d.tokensPerSecond.ratio, dBy);
    row(`decode seconds/token${tag(plan)}`, `${num(d.secondsPerToken)} s`, `${num(1 / d.tokensPerSecond.limit)} s`, d.tokensPerSecond.ratio, dBy);
  }
  row('peak resident memory (maxRSS)', gb(r.memory.peakRss.measured), gb(r.memory.peakRss.limit), r.memory.peakRss.ratio, `host memory; weights + KV cache are ${gb(r.memory.deviceBytes)}`);
  for (const p of r.profile ?? []) lines.push('', formatProfile(p, rf));
  lines.push('');
  lines.push(`total ${r.totalSeconds.toFixed(1)} s`);
  return lines.join('\n');
}

/**
 * A profiled plan: GPU time per kernel per token, each kernel's bytes/time against the copy
 * roofline, CPU encode time per token and GPU idle time per token.
 */
export function formatProfile(p: ProfileResult, rf: Roofline): string {
  const per = (x: number) => x / p.tokens;
  const sum = (f: (s: StepTiming) => number) => p.steps.reduce((a, s) => a + f(s), 0);
  const gpu = sum((s) => s.gpuSeconds);
  const wall = p.wallSeconds.reduce((a, b) => a + b, 0);
  const us = (s: number) => `${(s * 1e6).toFixed(0)} µs`;
  const lines = [
    `GPU time per kernel, ${p.tokens} decode tokens [${p.plan}] (timestamps, one pass per dispatch; bytes/time against the WGSL copy roofline ${(rf.kernelCopyBytesPerSecond / 1e9).toFixed(2)} GB/s):`,
    '',
    '| kernel | calls/token | GPU time/token | share | GB/s | of copy roofline |',
    '|---|---:|---:|---:|---:|---:|',
  ];
  for (const k of p.kernels) {
    const rate = k.bytes > 0 ? k.bytes / k.seconds : 0;
    lines.push(
      `| ${k.label} | ${num(per(k.calls))} | ${us(per(k.seconds))} | ${pct(k.seconds / gpu)} | ${rate ? (rate / 1e9).toFixed(2) : '-'} | ${rate ? pct(rate / rf.kernelCopyBytesPerSecond) : '-'} |`,
    );
  }
  const untimed = sum((s) => s.untimed);
  lines.push('');
  lines.push(
    `per token: wall ${us(per(wall))}, GPU busy ${us(per(gpu))}, CPU encode ${us(per(sum((s) => s.encodeSeconds)))}, ` +
      `GPU idle between kernels ${us(per(sum((s) => s.idleSeconds)))}, GPU idle outside the step's kernels (wall - span) ${us(per(Math.max(0, wall - sum((s) => s.spanSeconds))))}` +
      `, ${num(per(sum((s) => s.dispatches)))} dispatches${untimed ? `, ${untimed} untimed` : ''}`,
  );
  return lines.join('\n');
}
