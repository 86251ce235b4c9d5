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
 * The engine is measured as it serves: the folder is loaded into a Generator (src/generator.ts),
 * the scheduler the HTTP server runs, and every figure is of requests sent through
 * generator.generate() (token ids in), timed by when their events reach the consumer: prefill as
 * one request's time to first token, decode as one request's tokens, and S concurrent requests
 * for each stream count (aggregate decode, time to first token and inter-token latency
 * percentiles, as vLLM's serving benchmark reports them). --profile times every kernel the
 * scheduler's steps ran.
 *
 * Benchmarks print numbers; they never fail on speed.
 */
import { totalmem, cpus, loadavg } from 'node:os';
import { statSync } from 'node:fs';
import type { Gpu, AdapterReport } from '../src/gpu/device.ts';
import { bytesPerElement, createStorageBuffer, quantBytes, readU32, type QuantFormat, type WeightDType } from '../src/gpu/buffers.ts';
import { Encoder, getPipeline, params } from '../src/gpu/encoder.ts';
import { expectedTensors, loadConfig, type ModelConfig } from '../src/model/config.ts';
import { folderQuantization, quantizationFor, quantizedMatrices, scalesName, type Quantization } from '../src/model/quantized.ts';
import type { MistralModel } from '../src/model/model.ts';
import { Checkpoint } from '../src/model/safetensors.ts';
import { ggufRowBytes, ggufWeights, isGgufPath } from '../src/model/gguf_model.ts';
import { GgufFile } from '../src/util/gguf.ts';
import { Rng } from '../src/util/rng.ts';
import { formatPlan, type KernelPlan } from '../src/kernels/plan.ts';
import { GpuProfiler, type KernelTiming, type StepTiming } from '../src/gpu/profiler.ts';
import { DEFAULT_KV_CACHE_GB, Generator, type GenerationEvent, type GeneratorOptions } from '../src/generator.ts';
import { validateSamplingParams } from '../src/sampling/params.ts';
import type { OpenChatTokenizer } from '../src/tokenizer/index.ts';

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
   * `deviceBytes`: how many bytes each matrix takes on the device (by its Hugging Face name and
   * shape); `dtype`: the weights' formats, in words. Parameters come from the config's shapes.
   * `Workload.ofFolder` and `Workload.ofGguf` make both from a checkpoint.
   */
  constructor(readonly config: ModelConfig, deviceBytes: (name: string, shape: number[]) => number, dtype: string) {
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
    this.dtype = dtype;
  }

  /**
   * A folder's: `tensors` its stored tensors (their dtypes); `quant` how the matrices sit on the
   * device when quantized (a quantized folder's, or --quantize's), null when as stored, so that a
   * quantized folder's packed codes and scales count as the weights they encode.
   */
  static ofFolder(config: ModelConfig, tensors: Map<string, { dtype: string }>, quant: Quantization | null): Workload {
    const quantized = quant ? quantizedMatrices(config, quant) : new Map<string, QuantFormat>();
    const deviceBytes = (name: string, shape: number[]): number => {
      const f = quantized.get(name);
      if (f) return quantBytes(f, shape[0]!, shape[1]!);
      return shape.reduce((a, b) => a * b, 1) * bytesPerElement(tensors.get(name)!.dtype as WeightDType);
    };
    const floats = [...new Set([...tensors].filter(([n, t]) => t.dtype !== 'u8' && !n.endsWith('.scales')).map(([, t]) => t.dtype))].sort().join('+');
    const dtype = quant && quantized.size > 0 && tensors.has(scalesName([...quantized.keys()][0]!))
      ? `${quant.format} (embed_tokens ${quant.embed_tokens ?? floats}, lm_head ${quant.lm_head ?? quant.embed_tokens ?? floats}, the rest ${floats})`
      : floats;
    return new Workload(config, deviceBytes, dtype);
  }

  /** A GGUF file's: each matrix the bytes of its type as the file stores it (the device layouts stay within a few percent). */
  static async ofGguf(config: ModelConfig, path: string, quant: Quantization | null): Promise<Workload> {
    const file = await GgufFile.open(path);
    try {
      const weights = ggufWeights(file, config);
      const quantized = quant ? quantizedMatrices(config, quant) : new Map<string, QuantFormat>();
      const deviceBytes = (name: string, shape: number[]): number => {
        const f = quantized.get(name);
        return f ? quantBytes(f, shape[0]!, shape[1]!) : ggufRowBytes(weights.get(name)!) * shape[0]!;
      };
      const types = [...new Set([...weights.values()].map((w) => w.type))].sort().join('+');
      return new Workload(config, deviceBytes, quant ? `${quant.format} at load from ${types}` : `GGUF ${types}`);
    } finally {
      file.close();
    }
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

/** Stream counts measured unless told otherwise (`openchat bench --streams`). */
export const DEFAULT_STREAMS: readonly number[] = Object.freeze([1, 8, 32]);

export interface BenchOptions {
  /** Over the model's sliding_window (ModelOptions.slidingWindow). */
  slidingWindow?: number;
  /** Prompt lengths to prefill, each with fresh random token ids. */
  promptLengths: number[];
  /** Tokens to decode greedily after each request's first token, after a prompt of `decodePrompt` tokens. */
  decodeTokens: number;
  /** Prompt before decoding (and of every stream); default: the shortest of promptLengths. */
  decodePrompt?: number;
  /** Measurements per figure; the median is reported. */
  repeats?: number;
  seed: number;
  /** Bytes per copy in the bandwidth measurement (at most one storage binding). */
  copyBytes?: number;
  /** Most rows of the activation buffers (GeneratorOptions.maxChunk; the model's default when absent). */
  maxChunk?: number;
  /**
   * Kernel plans to compare, each forced over the device's plan ({} = the device's own);
   * their measurements are interleaved round by round, so they share the machine's noise.
   */
  plans?: Partial<KernelPlan>[];
  /** After the measurements, one request per plan profiled with GPU timestamps: its prefill steps and this many decode steps (0: none). */
  profileTokens?: number;
  /** Progress lines (to stderr in the CLI). */
  log?: (line: string) => void;
  /** Quantize the weights while loading (ModelOptions.quantize). */
  quantize?: QuantFormat;
  /** Concurrent request counts to measure (default DEFAULT_STREAMS); the Generator's max batch is the largest. */
  streams?: number[];
  /** KV-cache budget in GiB (GeneratorOptions.kvCacheGb): it may hold fewer sequences than the largest stream count. */
  kvCacheGb?: number;
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
  /** Seconds from sending the request (max_tokens 1) to its first event (median). */
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
  /** Seconds between successive tokens of the last repeat, as the consumer received them. */
  samples: number[];
}

export interface Percentiles {
  p50: number;
  p99: number;
}

/** One round of S streams: the aggregate decode rate and the interval it was taken over. */
export interface StreamsRound {
  tokensPerSecond: number;
  /** Decode tokens (after each request's first) that arrived in the interval. */
  decodeTokens: number;
  seconds: number;
  /**
   * 'all decoding': from the last stream's first token to the first stream's last, when every
   * stream decodes; 'whole run': from the first first token to the last token, when the streams
   * never all decode together (more requests than the KV-cache pool holds, or too few tokens).
   */
  window: 'all decoding' | 'whole run';
}

export interface StreamsResult {
  streams: number;
  /** Median over the rounds of the decode tokens of all streams per second (StreamsRound). */
  aggregateDecodeTokensPerSecond: number;
  /** From sending the S requests together to each one's first token, over every request of every round. */
  ttftMs: Percentiles;
  /** Between successive tokens of one stream as its consumer received them, over all streams and rounds. */
  itlMs: Percentiles;
  /** Requests that ran at once: the KV-cache pool's regions, or S when it holds them all (the rest queue). */
  concurrent: number;
  /** Prompt tokens per request, and the max_tokens each asked for. */
  promptTokens: number;
  maxTokens: number;
  /** Over all rounds: requests sent, tokens they generated, requests that ended before max_tokens (end of turn). */
  requests: number;
  completionTokens: number;
  stoppedEarly: number;
  /** Samples behind the percentiles: one per request, and one per token after each request's first. */
  ttftSamples: number;
  itlSamples: number;
  rounds: StreamsRound[];
  /**
   * Time to first token of one more request (a fresh prompt of promptTokens, max_tokens 1) sent
   * while S - 1 streams decode, median over the rounds: null for S = 1, or when S exceeds the pool.
   */
  ttftBesideMs: number | null;
}

export interface ProfileResult {
  plan: string;
  /** Which steps of the profiled request: its prompt's prefill steps, or its decode steps. */
  kind: 'prefill' | 'decode';
  /** Prompt tokens (prefill) or decoded tokens (decode): what the per-token figures divide by. */
  tokens: number;
  /** Summed over the profiled steps. */
  kernels: KernelTiming[];
  steps: StepTiming[];
  /** Wall time of each profiled step (step() called to its readback in hand). */
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
    /** The whole KV-cache pool (`sequences` regions). */
    kvCacheBytes: number;
    /** Positions per sequence. */
    contextLength: number;
    /** Rows of one step: the activation buffers, and the prompt tokens of a prefill step (the plan's prefillChunk). */
    maxChunk: number;
    /** Sequences the KV-cache pool holds (the Generator's max batch). */
    sequences: number;
    /** The max batch asked for: the largest stream count. */
    maxBatch: number;
  };
  options: {
    promptLengths: number[];
    decodeTokens: number;
    decodePrompt: number;
    repeats: number;
    seed: number;
    streams: number[];
    kvCacheGb?: number;
  };
  /** The kernel plan of `prefill`, `decode` and `streams` (src/kernels/plan.ts syntax). */
  plan: string;
  /** Every plan measured, the first being `plan` (the same figures as prefill, decode and streams). */
  plans: { plan: string; prefill: PrefillResult[]; decode: DecodeResult; streams: StreamsResult[] }[];
  /** Per plan, with --profile: GPU time per kernel over the profiled request's prefill steps and decode steps. */
  profile?: ProfileResult[];
  /** The better of the two measurements, field by field. */
  roofline: Roofline;
  /** Before loading, and after the measurements. */
  rooflineRuns: [Roofline, Roofline];
  load: Figure & { bytesPerSecond: number };
  warmup: { seconds: number; compileSeconds: number };
  prefill: PrefillResult[];
  decode: DecodeResult;
  streams: StreamsResult[];
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

/** The q-th quantile (0..1), interpolated between the two nearest ranks (numpy's default, as vLLM's benchmark uses). */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const at = q * (s.length - 1);
  const lo = Math.floor(at);
  const hi = Math.min(lo + 1, s.length - 1);
  return s[lo]! + (s[hi]! - s[lo]!) * (at - lo);
}

const percentiles = (xs: readonly number[]): Percentiles => ({ p50: quantile(xs, 0.5), p99: quantile(xs, 0.99) });

function timeFigure(measured: number, limit: { seconds: number; bound: string }): Figure {
  return { measured, limit: limit.seconds, ratio: limit.seconds / measured, boundBy: limit.bound };
}

function rateFigure(measured: number, limit: number, boundBy: string): Figure {
  return { measured, limit, ratio: measured / limit, boundBy };
}

const maxRssBytes = () => process.resourceUsage().maxRSS * 1024; // maxRSS is in KiB

// ---------------------------------------------------------------------------
// Requests as a client sees them
// ---------------------------------------------------------------------------

type DoneEvent = Extract<GenerationEvent, { type: 'done' }>;

/** One request as its consumer saw it: when it was sent, and when each event arrived (performance.now(), ms). */
export interface Observed {
  sentAt: number;
  texts: { text: string; at: number }[];
  done: DoneEvent;
  doneAt: number;
}

/** Drains a request's events, stamping each on arrival; `onFirst` runs when the first one comes. */
async function observe(events: AsyncIterable<GenerationEvent>, sentAt: number, onFirst?: () => void): Promise<Observed> {
  const texts: { text: string; at: number }[] = [];
  for await (const ev of events) {
    const at = performance.now();
    if (texts.length === 0) onFirst?.();
    if (ev.type === 'text') texts.push({ text: ev.text, at });
    else return { sentAt, texts, done: ev, doneAt: at };
  }
  throw new Error('bench: a generation ended without its done event');
}

/**
 * When each generated token reached the consumer (ms). A text event carries the text of all the
 * tokens since the previous one: usually one, but several when a character spans byte tokens
 * (held back until whole), and a token may add no text at all. So the done event's token ids
 * are run through the same stream decoder the Generator uses, which says which tokens each text
 * event completed; the replay must reproduce the events' texts exactly, or this throws (the
 * Generator's text pipeline changed, and this would count wrong). A stop token, and tokens whose
 * text never came out, arrive with the done event. The request must have had no stop strings.
 */
export function tokenArrivals(tokenizer: OpenChatTokenizer, o: Observed): number[] {
  const tokens = o.done.tokens;
  // A request without stop strings stops only at a stop token, which is never decoded.
  const decoded = o.done.finishReason === 'stop' ? tokens.length - 1 : tokens.length;
  const decoder = tokenizer.createStreamDecoder({ skipSpecial: true });
  const replay: { text: string; ends: number }[] = [];
  for (let j = 0; j < decoded; j++) {
    const text = decoder.push(tokens[j]!);
    if (text) replay.push({ text, ends: j + 1 });
  }
  const tail = decoder.flush();
  if (tail) replay.push({ text: tail, ends: decoded });
  const same = replay.length === o.texts.length && replay.every((r, i) => r.text === o.texts[i]!.text);
  if (!same) {
    throw new Error(
      `bench: the ${o.texts.length} text events of a request are not what its ${tokens.length} tokens decode to ` +
        `(${replay.length} pieces); the token timestamps would be wrong`,
    );
  }
  const at: number[] = [];
  let k = 0;
  for (let j = 0; j < tokens.length; j++) {
    while (k < replay.length && replay[k]!.ends <= j) k++;
    at.push(k < replay.length ? o.texts[k]!.at : o.doneAt);
  }
  return at;
}

/** The figures of one round of S streams from their token arrivals (ms). */
export function streamsRound(arrivals: readonly (readonly number[])[]): StreamsRound {
  const firsts = arrivals.map((a) => a[0]!);
  const lasts = arrivals.map((a) => a[a.length - 1]!);
  const together = { from: Math.max(...firsts), to: Math.min(...lasts) };
  const window = together.to > together.from ? 'all decoding' : 'whole run';
  const { from, to } = window === 'all decoding' ? together : { from: Math.min(...firsts), to: Math.max(...lasts) };
  let decodeTokens = 0;
  for (const a of arrivals) for (let j = 1; j < a.length; j++) if (a[j]! > from && a[j]! <= to) decodeTokens++;
  const seconds = (to - from) / 1000;
  return { tokensPerSecond: seconds > 0 ? decodeTokens / seconds : 0, decodeTokens, seconds, window };
}

/**
 * Calls `after` each time the model's step() has returned (readback in hand), until the returned
 * function is called. The Generator's scheduler is what calls step(), so this is how the profiler
 * ends a step exactly where the served path's steps end, without the scheduler knowing of it.
 */
function afterEachStep(
  model: MistralModel,
  after: (kind: Parameters<MistralModel['step']>[1], seconds: number) => Promise<void>,
): () => void {
  const step = model.step;
  let calls = 0;
  model.step = async (batch, kind, adapter) => {
    const t = performance.now();
    const out = await step.call(model, batch, kind, adapter);
    calls++;
    await after(kind, (performance.now() - t) / 1000);
    return out;
  };
  return () => {
    model.step = step;
    // The scheduler moved to another entry point: the profile would be empty, not wrong, so say so.
    if (calls === 0) throw new Error("bench --profile: the Generator ran no MistralModel.step() call; profiling hooks into step()");
  };
}

type KernelSnapshot = Map<string, KernelTiming>;
const snapshot = (ks: KernelTiming[]): KernelSnapshot => new Map(ks.map((k) => [k.label, { ...k }]));

/** Adds the kernels timed between two snapshots of one profiler to `into`. */
function addDifference(into: KernelSnapshot, before: KernelSnapshot, after: KernelSnapshot): void {
  for (const [label, k] of after) {
    const b = before.get(label);
    const calls = k.calls - (b?.calls ?? 0);
    if (calls === 0) continue;
    const sum = into.get(label) ?? { label, calls: 0, seconds: 0, bytes: 0 };
    sum.calls += calls;
    sum.seconds += k.seconds - (b?.seconds ?? 0);
    sum.bytes += k.bytes - (b?.bytes ?? 0);
    into.set(label, sum);
  }
}

/** A Generator for `dir`; a tokenizer that does not fit the model (an older synthetic folder) gets the command that fixes it. */
async function loadGenerator(dir: string, opts: GeneratorOptions): Promise<Generator> {
  try {
    return await Generator.load({ ...opts, modelDir: dir });
  } catch (err) {
    if (err instanceof Error && /belong to different models/.test(err.message)) {
      throw new Error(
        `${err.message}. The benchmark runs through the Generator, which needs the model's tokenizer; ` +
          `for a folder from bench/synthetic.ts, write a matching one with: npx tsx bench/synthetic.ts tokenizer ${dir}`,
      );
    }
    throw err;
  }
}

/**
 * Lets the scheduler's loop wind down after a request before the next is sent: the loop marks
 * itself idle a few microtasks after its last step, so a request sent in between would rely on
 * microtask order to be picked up.
 */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Loads `dir` into a Generator (the scheduler the server uses), measures the device's roofline,
 * then sends requests through generator.generate(): prefill speed per prompt length (one request,
 * max_tokens 1), single-stream decode, and S concurrent streams for each stream count.
 * The Generator is closed afterwards; the device stays.
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
  const streamCounts = [...new Set(opts.streams ?? DEFAULT_STREAMS)];
  if (streamCounts.some((s) => !Number.isInteger(s) || s < 1)) throw new Error(`stream counts must be positive integers; got [${streamCounts}]`);
  if (!Number.isInteger(opts.decodeTokens) || opts.decodeTokens < 1) throw new Error(`decode tokens must be a positive integer; got ${opts.decodeTokens}`);
  const decodePrompt = opts.decodePrompt ?? Math.min(...promptLengths);
  const profileTokens = opts.profileTokens ?? 0;
  const config = await loadConfig(dir, undefined, { slidingWindow: opts.slidingWindow });
  // Every sequence gets only the context the run uses (prompt + max_tokens at most): on a
  // software adapter the KV cache is host memory too. The warm-up asks for 2 tokens per prompt.
  const needed = Math.max(...promptLengths.map((n) => n + 2), decodePrompt + opts.decodeTokens + 1, decodePrompt + profileTokens + 1);
  if (needed > config.max_position_embeddings) {
    throw new Error(`the run needs ${needed} positions, more than max_position_embeddings ${config.max_position_embeddings}`);
  }
  const maxBatch = Math.max(1, ...streamCounts);

  const atLoad = opts.quantize ? quantizationFor(config, opts.quantize) : null;
  let work: Workload;
  let storedBytes: number;
  if (isGgufPath(dir)) {
    work = await Workload.ofGguf(config, dir, atLoad);
    storedBytes = statSync(dir).size;
  } else {
    const ckpt = await Checkpoint.open(dir);
    work = Workload.ofFolder(config, ckpt.tensors, await folderQuantization(dir) ?? atLoad);
    storedBytes = ckpt.totalBytes;
    ckpt.close();
  }

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

  log(`loading ${dir} (${(storedBytes / 1e9).toFixed(2)} GB) into a Generator (max batch ${maxBatch})...`);
  const t0 = performance.now();
  let lastLog = t0;
  const gen = await loadGenerator(dir, {
    gpu,
    contextLength: needed,
    maxChunk: opts.maxChunk,
    quantize: opts.quantize,
    maxBatch,
    kvCacheGb: opts.kvCacheGb,
    slidingWindow: opts.slidingWindow,
    onProgress: (p) => {
      const now = performance.now();
      if (now - lastLog > 5000) {
        lastLog = now;
        log(`  ${(p.bytesDone / 1e9).toFixed(2)} / ${(p.bytesTotal / 1e9).toFixed(2)} GB, ${p.seconds.toFixed(0)} s`);
      }
    },
  });
  const model = gen.model;
  const loadSeconds = (performance.now() - t0) / 1000;
  const rssAfterLoadBytes = maxRssBytes();
  log(`  loaded in ${loadSeconds.toFixed(2)} s; peak RSS so far ${(rssAfterLoadBytes / 1e9).toFixed(2)} GB`);
  const pool = gen.maxBatch;
  for (const s of streamCounts.filter((s) => s > pool)) {
    log(
      `streams ${s}: the KV-cache pool holds ${pool} sequences of ${needed} positions (--kv-cache-gb ${opts.kvCacheGb ?? DEFAULT_KV_CACHE_GB}), ` +
        `so ${s - pool} of the ${s} requests queue until others end`,
    );
  }

  try {
    const rng = new Rng(opts.seed);
    const randomIds = (n: number) => Array.from({ length: n }, () => rng.int(0, config.vocab_size));
    // Greedy (the argmax readout), no stop strings: the tokens do not depend on the seed, and only
    // an end-of-turn token can end a request before max_tokens.
    const greedy = (maxTokens: number, seed: number) => validateSamplingParams({ temperature: 0, max_tokens: maxTokens, seed });
    let requestSeed = opts.seed;
    const send = (ids: number[], maxTokens: number, signal?: AbortSignal, onFirst?: () => void): Promise<Observed> => {
      const sentAt = performance.now();
      return observe(gen.generate(ids, greedy(maxTokens, requestSeed++), signal), sentAt, onFirst);
    };
    /** One request alone, its whole prompt prefilled: one whose first id happens to match a region's would be partly reused, so it is drawn again. */
    const alone = async (n: number, maxTokens: number): Promise<Observed> => {
      await settle();
      for (;;) {
        const o = await send(randomIds(n), maxTokens);
        if (o.done.timings.reusedTokens === 0) return o;
        await settle(); // the first id matched a region's by chance: draw again
      }
    };
    const together = async (s: number, maxTokens: number): Promise<Observed[]> => {
      await settle();
      return Promise.all(Array.from({ length: s }, () => send(randomIds(decodePrompt), maxTokens)));
    };

    const plans = opts.plans && opts.plans.length > 0 ? opts.plans : [{}];
    const planNames = plans.map((p) => {
      model.replan(p);
      return formatPlan(model.plan);
    });
    // Warm-up: every prompt length and a decode step, then the most streams at once (batched
    // prefill and decode steps), so that pipeline compilation (seconds each on lavapipe) is not
    // timed below. Running the same again warm tells compilation apart from the work itself.
    const warmLengths = [...new Set([...promptLengths, decodePrompt])];
    const warmRound = async () => {
      const t = performance.now();
      for (const p of plans) {
        model.replan(p);
        for (const n of warmLengths) await alone(n, 2);
        await together(maxBatch, 2);
      }
      return (performance.now() - t) / 1000;
    };
    log(`kernel plan${plans.length > 1 ? 's (interleaved)' : ''}: ${planNames.join('  |  ')}`);
    log(`warm-up (prompts of ${warmLengths.join(', ')} tokens, then ${maxBatch} streams${plans.length > 1 ? ', each plan' : ''})...`);
    const warmFirst = await warmRound();
    const warmAgain = await warmRound();
    log(`  ${warmFirst.toFixed(2)} s (the same again, compiled: ${warmAgain.toFixed(2)} s)`);

    // Prefill: one request with max_tokens 1; its first event is the first token.
    const prefillSamples = plans.map(() => promptLengths.map((n) => ({ n, samples: [] as number[] })));
    for (let li = 0; li < promptLengths.length; li++) {
      const n = promptLengths[li]!;
      for (let r = 0; r < repeats; r++) {
        for (let pi = 0; pi < plans.length; pi++) {
          model.replan(plans[pi]!);
          const o = await alone(n, 1);
          const first = tokenArrivals(gen.tokenizer, o)[0]!;
          prefillSamples[pi]![li]!.samples.push((first - o.sentAt) / 1000);
        }
      }
      plans.forEach((_, pi) => {
        const ttft = median(prefillSamples[pi]![li]!.samples);
        log(`  prefill ${n}${plans.length > 1 ? ` [${planNames[pi]}]` : ''}: ${ttft.toFixed(3)} s to first token, ${(n / ttft).toFixed(1)} tokens/s`);
      });
    }

    /**
     * One more request while `busy` streams decode: they start together, and once every one has
     * its first token (all decode), a fresh prompt with max_tokens 1 is sent. Null when a
     * stream ended before that request's first token (it did not run beside all of them).
     */
    const ttftBeside = async (busy: number): Promise<number | null> => {
      await settle();
      // One controller per request, as separate clients would have (a signal shared by dozens of
      // requests would also trip Node's listener-leak warning).
      const stops = Array.from({ length: busy }, () => new AbortController());
      const stopAll = () => stops.forEach((c) => c.abort());
      let started = 0;
      let allDecoding!: () => void;
      const decoding = new Promise<void>((resolve) => (allDecoding = resolve));
      // As many tokens as the context allows: they are cancelled once the probe has its token.
      const background = stops.map((stop) =>
        send(randomIds(decodePrompt), needed - decodePrompt, stop.signal, () => {
          if (++started === busy) allDecoding();
        }),
      );
      try {
        // A background request that fails before its first token fails this, rather than hanging it.
        await Promise.race([decoding, Promise.all(background)]);
        const probe = await send(randomIds(decodePrompt), 1);
        const first = tokenArrivals(gen.tokenizer, probe)[0]!;
        stopAll();
        const others = await Promise.all(background);
        return others.every((o) => o.doneAt > first) ? first - probe.sentAt : null;
      } finally {
        stopAll();
        await Promise.allSettled(background);
      }
    };

    // Streams: S requests sent together, each a fresh prompt, first token plus decodeTokens each.
    // S = 1 is also the single-stream decode figure.
    const maxTokens = opts.decodeTokens + 1;
    const counts = [1, ...streamCounts.filter((s) => s !== 1)];
    type Collected = { rounds: StreamsRound[]; ttft: number[]; itl: number[]; requests: number; completion: number; early: number; beside: number[] };
    const collected = plans.map(() =>
      new Map(counts.map((s): [number, Collected] => [s, { rounds: [], ttft: [], itl: [], requests: 0, completion: 0, early: 0, beside: [] }])),
    );
    const decodeRuns = plans.map(() => [] as { tokens: number; seconds: number; gaps: number[] }[]);
    for (let r = 0; r < repeats; r++) {
      for (const s of counts) {
        for (let pi = 0; pi < plans.length; pi++) {
          model.replan(plans[pi]!);
          const runs = await together(s, maxTokens);
          const arrivals = runs.map((o) => tokenArrivals(gen.tokenizer, o));
          const c = collected[pi]!.get(s)!;
          const round = streamsRound(arrivals);
          c.rounds.push(round);
          c.requests += s;
          runs.forEach((o, i) => {
            const a = arrivals[i]!;
            c.ttft.push(a[0]! - o.sentAt);
            for (let j = 1; j < a.length; j++) c.itl.push(a[j]! - a[j - 1]!);
            c.completion += o.done.usage.completion_tokens;
            if (o.done.finishReason !== 'length') c.early++;
          });
          if (s === 1) {
            const a = arrivals[0]!;
            decodeRuns[pi]!.push({ tokens: a.length - 1, seconds: (a[a.length - 1]! - a[0]!) / 1000, gaps: a.slice(1).map((t, j) => (t - a[j]!) / 1000) });
          }
          if (s > 1 && s <= pool) {
            const ms = await ttftBeside(s - 1);
            if (ms === null) log(`  (a stream ended before the request sent beside ${s - 1} streams had its first token: no figure this round)`);
            else c.beside.push(ms);
          }
          const tag = plans.length > 1 ? ` [${planNames[pi]}]` : '';
          log(
            `  ${s} stream${s > 1 ? 's' : ''}${tag}: ${round.tokensPerSecond.toFixed(1)} decode tokens/s (${round.decodeTokens} tokens over ${round.seconds.toFixed(2)} s, ${round.window})` +
              (runs.some((o) => o.done.finishReason !== 'length') ? `; ${runs.filter((o) => o.done.finishReason !== 'length').length} ended at an end-of-turn token before max_tokens` : ''),
          );
        }
      }
    }

    // GPU time per kernel: one request per plan (a fresh prompt, then profileTokens decode steps)
    // with timestamps on every dispatch, the steps split by kind as the scheduler ran them.
    const profile: ProfileResult[] = [];
    for (let pi = 0; pi < plans.length && profileTokens > 0; pi++) {
      model.replan(plans[pi]!);
      await settle();
      const prof = GpuProfiler.attach(gpu);
      const byKind = {
        prefill: { kernels: new Map() as KernelSnapshot, steps: [] as StepTiming[], wall: [] as number[] },
        decode: { kernels: new Map() as KernelSnapshot, steps: [] as StepTiming[], wall: [] as number[] },
      };
      let before = snapshot(prof.kernels());
      const restore = afterEachStep(model, async (kind, seconds) => {
        const step = await prof.endStep();
        const now = snapshot(prof.kernels());
        const into = byKind[kind];
        addDifference(into.kernels, before, now);
        into.steps.push(step);
        into.wall.push(seconds);
        before = now;
      });
      let decoded = 0;
      try {
        const o = await send(randomIds(decodePrompt), profileTokens + 1);
        decoded = o.done.tokens.length - 1;
      } finally {
        prof.detach();
        restore();
      }
      for (const kind of ['prefill', 'decode'] as const) {
        const k = byKind[kind];
        const kernels = [...k.kernels.values()].sort((a, b) => b.seconds - a.seconds);
        profile.push({ plan: planNames[pi]!, kind, tokens: kind === 'prefill' ? decodePrompt : decoded, kernels, steps: k.steps, wallSeconds: k.wall });
      }
      log(`  profiled a ${decodePrompt}-token prompt and ${decoded} decode steps [${planNames[pi]}]`);
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
        const limit = work.prefillLimit(n, model.maxChunk, roofline);
        return {
          promptTokens: n,
          timeToFirstToken: timeFigure(ttft, limit),
          tokensPerSecond: rateFigure(n / ttft, n / limit.seconds, limit.bound),
          samples,
        };
      });
      const runs = decodeRuns[pi]!;
      const rate = median(runs.map((d) => (d.seconds > 0 ? d.tokens / d.seconds : 0)));
      const decode: DecodeResult = {
        tokens: opts.decodeTokens,
        startPosition: decodePrompt,
        tokensPerSecond: rateFigure(rate, opts.decodeTokens / decodeLimit.seconds, decodeLimit.bound),
        secondsPerToken: 1 / rate,
        bytesPerToken: work.decodeBytes(meanPos),
        samples: runs[runs.length - 1]!.gaps,
      };
      const streams: StreamsResult[] = streamCounts.map((s) => {
        const c = collected[pi]!.get(s)!;
        return {
          streams: s,
          aggregateDecodeTokensPerSecond: median(c.rounds.map((x) => x.tokensPerSecond)),
          ttftMs: percentiles(c.ttft),
          itlMs: percentiles(c.itl),
          concurrent: Math.min(s, pool),
          promptTokens: decodePrompt,
          maxTokens,
          requests: c.requests,
          completionTokens: c.completion,
          stoppedEarly: c.early,
          ttftSamples: c.ttft.length,
          itlSamples: c.itl.length,
          rounds: c.rounds,
          ttftBesideMs: c.beside.length > 0 ? median(c.beside) : null,
        };
      });
      return { plan: planNames[pi]!, prefill, decode, streams };
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
        maxChunk: model.maxChunk,
        sequences: pool,
        maxBatch,
      },
      options: { promptLengths, decodeTokens: opts.decodeTokens, decodePrompt, repeats, seed: opts.seed, streams: streamCounts, kvCacheGb: opts.kvCacheGb },
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
      streams: byPlan[0]!.streams,
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
    gen.close();
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
      `KV cache ${gb(m.kvCacheBytes)} (${m.sequences} sequence${m.sequences > 1 ? 's' : ''} of ${m.contextLength} positions), ` +
      `prefill steps of ${m.maxChunk} tokens`,
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
    `served:   every figure below is of requests sent through the Generator's scheduler (generator.generate(), greedy, fresh random prompt ids), ` +
      `timed by when their events reached the consumer; prefill: one request with max_tokens 1, its time to first token; decode: one request`,
  );
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
  if (r.streams.length > 0) lines.push('', formatStreams(r));
  for (const p of r.profile ?? []) lines.push('', formatProfile(p, rf));
  lines.push('');
  lines.push(`total ${r.totalSeconds.toFixed(1)} s`);
  return lines.join('\n');
}

/** The streams table: aggregate decode, TTFT and inter-token latency percentiles per stream count, each plan. */
export function formatStreams(r: BenchResult): string {
  const first = r.streams[0]!;
  const lines = [
    `Streams (S requests sent together, each a fresh random ${first.promptTokens}-token prompt, greedy, max_tokens ${first.maxTokens}; ` +
      `aggregate decode = decode tokens of all streams over the time all S decode together; TTFT from sending to a request's first token; ` +
      `ITL between successive tokens of a stream as received, tokens of one text event after the first counting 0; ` +
      `"beside": time to first token of one more ${first.promptTokens}-token request sent while S - 1 streams decode):`,
    '',
    '| streams | at once | aggregate decode tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | TTFT beside S - 1 |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  const ms = (x: number) => `${num(x)} ms`;
  const notes = new Set<string>();
  for (const { plan, streams } of r.plans) {
    for (const s of streams) {
      const whole = s.rounds.some((x) => x.window === 'whole run');
      if (s.concurrent < s.streams) notes.add(`${s.streams} streams: the KV-cache pool holds ${s.concurrent}, so ${s.streams - s.concurrent} requests queued until others ended`);
      if (whole) notes.add(`(a) ${s.streams} streams: never all decoding at once; aggregate over the whole run (first first token to last token)`);
      if (s.stoppedEarly > 0) notes.add(`${s.streams} streams: ${s.stoppedEarly} of ${s.requests} requests ended at an end-of-turn token before max_tokens`);
      const tag = r.plans.length > 1 ? ` [${plan}]` : '';
      lines.push(
        `| ${s.streams}${tag} | ${s.concurrent} | ${num(s.aggregateDecodeTokensPerSecond)}${whole ? ' (a)' : ''} | ${ms(s.ttftMs.p50)} | ${ms(s.ttftMs.p99)} | ` +
          `${ms(s.itlMs.p50)} | ${ms(s.itlMs.p99)} | ${s.ttftBesideMs === null ? '-' : ms(s.ttftBesideMs)} |`,
      );
    }
  }
  if (notes.size > 0) lines.push('', ...notes);
  return lines.join('\n');
}

/**
 * One profiled request's steps of one kind: GPU time per kernel per token, each kernel's
 * bytes/time against the copy roofline, CPU encode time and GPU idle time per token.
 */
export function formatProfile(p: ProfileResult, rf: Roofline): string {
  const per = (x: number) => x / Math.max(1, p.tokens);
  const sum = (f: (s: StepTiming) => number) => p.steps.reduce((a, s) => a + f(s), 0);
  const gpu = sum((s) => s.gpuSeconds);
  const wall = p.wallSeconds.reduce((a, b) => a + b, 0);
  const us = (s: number) => `${(s * 1e6).toFixed(0)} µs`;
  const what = p.kind === 'decode' ? `${p.tokens} decode tokens` : `the prefill of a ${p.tokens}-token prompt (${p.steps.length} step${p.steps.length === 1 ? '' : 's'})`;
  const lines = [
    `GPU time per kernel, ${what} [${p.plan}] (one request through the scheduler; timestamps, one pass per dispatch; ` +
      `bytes/time against the WGSL copy roofline ${(rf.kernelCopyBytesPerSecond / 1e9).toFixed(2)} GB/s):`,
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
