/**
 * Kernel micro-benchmarks at the Mistral-7B shapes: `npx tsx bench/kernels.ts`
 * (or `npm run bench:kernels`). Options: --quick (fewer repetitions), --only <substring>,
 * --matvec rows,subgroup (the matvec strategies to compare; default: every one this device runs).
 * `--only fused` compares the fusions of the decode dispatches (plan.fuse) under each strategy;
 * `--only ggml` the decode matvec over GGUF block formats (q4_k, q6_k) against the project's q4.
 * The matrix kernels run once per strategy, interleaved round by round in one process, so a
 * comparison shares whatever else the machine was doing.
 *
 * For every kernel it prints time per call, GB/s (bytes the kernel must touch: weights for
 * the matrix kernels, activations for the rest) and GFLOP/s, next to this device's own copy
 * bandwidth measured in the same run (copyBufferToBuffer of a large buffer, and a trivial WGSL
 * copy kernel), as a ratio: on lavapipe the "GPU" is the CPU, so the copy kernel, not a spec
 * sheet, is the honest ceiling.
 *
 * Timing: N calls recorded into one command buffer, submitted once, and timed until
 * `device.queue.onSubmittedWorkDone()` resolves; the best of a few such runs is reported
 * (other processes on a shared CPU only ever make a run slower).
 */
import { getGpu, releaseGpu, type Gpu } from '../src/gpu/device.ts';
import { allocateMatrix, createStorageBuffer, destroyMatrix, matrixRowBytes, uploadMatrix, writeBuffer, type GpuMatrix, type WeightDType } from '../src/gpu/buffers.ts';
import { Encoder, getPipeline } from '../src/gpu/encoder.ts';
import { Rng } from '../src/util/rng.ts';
import { f32ToF16 } from '../src/util/half.ts';
import { matmul, matmulSwiGLU } from '../src/kernels/matmul/index.ts';
import { normQKV, normSwiGLU } from '../src/kernels/matmul/fused.ts';
import { PLAN_CHOICES, parsePlan, runnable, type KernelPlan } from '../src/kernels/plan.ts';
import { embedding } from '../src/kernels/embedding.ts';
import { rmsNorm } from '../src/kernels/rmsnorm.ts';
import { rope, ropeTable } from '../src/kernels/rope.ts';
import {
  ATTENTION_STRATEGIES, attention, createAttentionPartials, destroyAttentionPartials, PREFILL_ATTENTION_STRATEGIES, type AttentionStrategy, type PrefillAttentionStrategy,
} from '../src/kernels/attention/index.ts';
import { KV_CACHE_DTYPES, kvBytesPerElement, type KvCacheDtype } from '../src/kernels/kv_cache.ts';
import { kvWrite } from '../src/kernels/kv_write.ts';
import { argmax } from '../src/kernels/argmax.ts';
import { randomQuantMatrix } from '../src/kernels/matmul/fixtures.ts';
import { randomBlocks } from '../src/kernels/ggml/blocks.testing.ts';
import { ggmlDeviceDType, packGgmlRows } from '../src/kernels/ggml/pack.ts';
import { GGML_TYPES, type GgmlType } from '../src/kernels/ggml/types.ts';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const only = argv.includes('--only') ? argv[argv.indexOf('--only') + 1] : undefined;
const REPEATS = quick ? 2 : 3;
const matvecArg = argv.includes('--matvec') ? argv[argv.indexOf('--matvec') + 1] : undefined;
const gbs = (b: number) => (b / 1e9).toFixed(2);

// Mistral-7B (OpenChat 3.5) shapes.
const HIDDEN = 4096;
const INTERMEDIATE = 14336;
const VOCAB = 32002;
const HEADS = 32;
const KV_HEADS = 8;
const HEAD_DIM = 128;
const WINDOW = 4096;
const PREFILL = 128;

interface Case {
  name: string;
  /** Bytes the kernel must read or write once per call. */
  bytes: number;
  flops: number;
  /** Calls per timed run: enough that a run lasts a noticeable time. */
  calls: number;
  /** Records one call with the given plan (only the matrix kernels look at it). */
  record: (enc: Encoder, plan: Pick<KernelPlan, 'matvec'>) => void;
  /** True for the kernels whose variant the plan's matvec key picks. */
  byPlan?: boolean;
  cleanup?: () => void;
}

/** Seconds per call of each plan, best of REPEATS rounds, the plans interleaved within each round. */
async function timeCalls(gpu: Gpu, c: Pick<Case, 'record' | 'calls'>, plans: Pick<KernelPlan, 'matvec'>[] = [{ matvec: 'rows' }]): Promise<number[]> {
  const run = async (plan: Pick<KernelPlan, 'matvec'>, calls: number) => {
    const t0 = performance.now();
    const enc = new Encoder(gpu);
    for (let i = 0; i < calls; i++) c.record(enc, plan);
    enc.submit();
    await gpu.device.queue.onSubmittedWorkDone();
    return (performance.now() - t0) / 1000 / calls;
  };
  for (const plan of plans) await run(plan, 1); // compile and warm up
  const best = plans.map(() => Infinity);
  for (let r = 0; r < REPEATS; r++) {
    for (let i = 0; i < plans.length; i++) best[i] = Math.min(best[i]!, await run(plans[i]!, c.calls));
  }
  return best;
}

/** Random f16 values in [-1, 1) as raw bytes (a fixed pattern repeated, fast for 250 MiB). */
function randomF16Bytes(rng: Rng, count: number): Uint8Array {
  const pattern = new Uint16Array(1 << 16);
  for (let i = 0; i < pattern.length; i++) pattern[i] = f32ToF16(rng.next() * 2 - 1);
  const out = new Uint16Array(count);
  for (let i = 0; i < count; i += pattern.length) out.set(pattern.subarray(0, Math.min(pattern.length, count - i)), i);
  return new Uint8Array(out.buffer);
}

function randomMatrixF16(gpu: Gpu, rng: Rng, rows: number, cols: number, label: string): GpuMatrix {
  const dtype: WeightDType = 'f16';
  return uploadMatrix(gpu, randomF16Bytes(rng, rows * cols), rows, cols, dtype, label);
}

function randomF32Buffer(gpu: Gpu, rng: Rng, count: number, label?: string): GPUBuffer {
  const data = new Float32Array(count);
  for (let i = 0; i < count; i++) data[i] = rng.next() * 2 - 1;
  const buffer = createStorageBuffer(gpu, count * 4, label);
  writeBuffer(gpu, buffer, data);
  return buffer;
}

const COPY_KERNEL = /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let i = gid.y * n.x * 64u + gid.x;
  dst[i] = src[i];
}`;

/** The device's copy bandwidth (bytes read per second; as many again are written). */
async function copyBandwidth(gpu: Gpu): Promise<{ copyBuffer: number; copyKernel: number }> {
  const size = 128 * 2 ** 20;
  const a = createStorageBuffer(gpu, size, 'copy-src');
  const b = createStorageBuffer(gpu, size, 'copy-dst');
  const copyOnce = async (calls: number) => {
    const t0 = performance.now();
    const enc = gpu.device.createCommandEncoder();
    for (let i = 0; i < calls; i++) enc.copyBufferToBuffer(a, 0, b, 0, size);
    gpu.device.queue.submit([enc.finish()]);
    await gpu.device.queue.onSubmittedWorkDone();
    return (performance.now() - t0) / 1000 / calls;
  };
  await copyOnce(1);
  let best = Infinity;
  for (let r = 0; r < REPEATS; r++) best = Math.min(best, await copyOnce(4));
  const copyBuffer = size / best;
  const pipeline = getPipeline(gpu, COPY_KERNEL, 'main', {}, 'bench-copy');
  const vec4s = size / 16;
  const [kernel] = await timeCalls(gpu, { calls: 4, record: (enc) => enc.dispatch(pipeline, null, [a, b], [1024, vec4s / 64 / 1024]) });
  a.destroy();
  b.destroy();
  return { copyBuffer, copyKernel: size / kernel };
}

function matrixCases(gpu: Gpu, rng: Rng): Array<() => Case> {
  const cases: Array<() => Case> = [];
  const shapes: Array<[string, number, number]> = [
    ['q/o_proj', HIDDEN, HIDDEN],
    ['gate/up_proj', INTERMEDIATE, HIDDEN],
    ['down_proj', HIDDEN, INTERMEDIATE],
    ['lm_head', VOCAB, HIDDEN],
  ];
  for (const [label, rows, cols] of shapes) {
    for (const tokens of [1, PREFILL]) {
      cases.push(() => {
        const w = randomMatrixF16(gpu, rng, rows, cols, label);
        const x = randomF32Buffer(gpu, rng, tokens * cols);
        const y = createStorageBuffer(gpu, tokens * rows * 4);
        return {
          name: `matmul ${label} ${rows}x${cols} f16, ${tokens === 1 ? 'decode' : `prefill ${tokens}`}`,
          bytes: rows * cols * 2 + tokens * (rows + cols) * 4,
          flops: 2 * rows * cols * tokens,
          calls: tokens === 1 ? 8 : 1,
          byPlan: tokens === 1,
          record: (enc, plan) => matmul(enc, { x, w, y, tokens, plan }),
          cleanup: () => {
            destroyMatrix(w);
            x.destroy();
            y.destroy();
          },
        };
      });
    }
  }
  for (const tokens of [1, PREFILL]) {
    cases.push(() => {
      const gate = randomMatrixF16(gpu, rng, INTERMEDIATE, HIDDEN, 'gate_proj');
      const up = randomMatrixF16(gpu, rng, INTERMEDIATE, HIDDEN, 'up_proj');
      const x = randomF32Buffer(gpu, rng, tokens * HIDDEN);
      const y = createStorageBuffer(gpu, tokens * INTERMEDIATE * 4);
      return {
        name: `swiglu gate+up ${INTERMEDIATE}x${HIDDEN} f16, ${tokens === 1 ? 'decode' : `prefill ${tokens}`}`,
        bytes: 2 * INTERMEDIATE * HIDDEN * 2 + tokens * (INTERMEDIATE + HIDDEN) * 4,
        flops: 2 * 2 * INTERMEDIATE * HIDDEN * tokens,
        calls: tokens === 1 ? 4 : 1,
        byPlan: tokens === 1,
        record: (enc, plan) => matmulSwiGLU(enc, { x, gate, up, y, tokens, plan }),
        cleanup: () => {
          destroyMatrix(gate);
          destroyMatrix(up);
          x.destroy();
          y.destroy();
        },
      };
    });
  }
  cases.push(() => {
    const table = randomMatrixF16(gpu, rng, VOCAB, HIDDEN, 'embed_tokens');
    const ids = new Uint32Array(PREFILL).map(() => rng.int(0, VOCAB));
    const idsBuf = createStorageBuffer(gpu, ids.byteLength);
    writeBuffer(gpu, idsBuf, ids);
    const out = createStorageBuffer(gpu, PREFILL * HIDDEN * 4);
    return {
      name: `embedding ${VOCAB}x${HIDDEN} f16, ${PREFILL} tokens`,
      bytes: PREFILL * HIDDEN * (2 + 4),
      flops: 0,
      calls: 16,
      record: (enc) => embedding(enc, { ids: idsBuf, table, out, tokens: PREFILL }),
      cleanup: () => {
        destroyMatrix(table);
        idsBuf.destroy();
        out.destroy();
      },
    };
  });
  return cases;
}

/** The other kernels of a layer, at decode (1 token) and prefill shapes. */
function otherCases(gpu: Gpu, rng: Rng): Array<() => Case> {
  const cases: Array<() => Case> = [];
  for (const tokens of [1, PREFILL]) {
    const what = tokens === 1 ? 'decode' : `prefill ${tokens}`;
    cases.push(() => {
      const x = randomF32Buffer(gpu, rng, tokens * HIDDEN);
      const weight = randomF32Buffer(gpu, rng, HIDDEN);
      const y = createStorageBuffer(gpu, tokens * HIDDEN * 4);
      return {
        name: `rmsnorm ${HIDDEN}, ${what}`,
        bytes: (2 * tokens + 1) * HIDDEN * 4,
        flops: 4 * tokens * HIDDEN,
        calls: 64,
        record: (enc) => rmsNorm(enc, { x, weight, y, tokens, dim: HIDDEN, eps: 1e-5 }),
        cleanup: () => [x, weight, y].forEach((b) => b.destroy()),
      };
    });
    cases.push(() => {
      const pos0 = 1000;
      const table = ropeTable(gpu, pos0 + tokens, HEAD_DIM, 10000);
      const q = randomF32Buffer(gpu, rng, tokens * HEADS * HEAD_DIM);
      const k = randomF32Buffer(gpu, rng, tokens * KV_HEADS * HEAD_DIM);
      return {
        name: `rope q ${HEADS}x${HEAD_DIM} + k ${KV_HEADS}x${HEAD_DIM}, ${what}`,
        bytes: 2 * tokens * (HEADS + KV_HEADS) * HEAD_DIM * 4 + tokens * HEAD_DIM * 4,
        flops: 3 * tokens * (HEADS + KV_HEADS) * HEAD_DIM,
        calls: 64,
        record: (enc) => rope(enc, { q, k, table, tokens, heads: HEADS, kvHeads: KV_HEADS, headDim: HEAD_DIM, pos0 }),
        cleanup: () => [q, k, table].forEach((b) => b.destroy()),
      };
    });
    if (tokens > 1) {
      // Prefill runs plan.prefillAttention under both decode strategies (decode and the prefill strategies are compared below).
      for (const kvCache of KV_CACHE_DTYPES) cases.push(() => attentionCase(gpu, rng, tokens, 2048, 'tiled', kvCache));
    }
    for (const dtype of KV_CACHE_DTYPES) {
      cases.push(() => {
        const kvRow = KV_HEADS * HEAD_DIM;
        const kNew = randomF32Buffer(gpu, rng, tokens * kvRow);
        const vNew = randomF32Buffer(gpu, rng, tokens * kvRow);
        const kCache = createStorageBuffer(gpu, WINDOW * kvRow * kvBytesPerElement(dtype));
        const vCache = createStorageBuffer(gpu, WINDOW * kvRow * kvBytesPerElement(dtype));
        return {
          name: `kv_write ${KV_HEADS}x${HEAD_DIM} ${dtype} cache, ${what}`,
          bytes: 2 * tokens * kvRow * (4 + kvBytesPerElement(dtype)),
          flops: 0,
          calls: 64,
          record: (enc) => kvWrite(enc, { kNew, vNew, kCache, vCache, tokens, pos0: 100, kvHeads: KV_HEADS, headDim: HEAD_DIM, slots: WINDOW, dtype }),
          cleanup: () => [kNew, vNew, kCache, vCache].forEach((b) => b.destroy()),
        };
      });
    }
  }
  cases.push(() => {
    const logits = randomF32Buffer(gpu, rng, VOCAB);
    const out = createStorageBuffer(gpu, 16);
    return {
      name: `argmax ${VOCAB}`,
      bytes: VOCAB * 4,
      flops: VOCAB,
      calls: 64,
      record: (enc) => argmax(enc, { logits, n: VOCAB, rows: 1, out }),
      cleanup: () => [logits, out].forEach((b) => b.destroy()),
    };
  });
  return cases;
}

/** Attention at the 7B shape: `tokens` queries at positions pos0.., over a full 4096-slot cache. */
function attentionCase(
  gpu: Gpu, rng: Rng, tokens: number, pos0: number, strategy: AttentionStrategy, kvCache: KvCacheDtype, prefill: PrefillAttentionStrategy = 'tiled',
): Case {
  const kvRow = KV_HEADS * HEAD_DIM;
  const q = randomF32Buffer(gpu, rng, tokens * HEADS * HEAD_DIM);
  const kNew = randomF32Buffer(gpu, rng, tokens * kvRow);
  const vNew = randomF32Buffer(gpu, rng, tokens * kvRow);
  const cache = () => {
    if (kvCache === 'f32') return randomF32Buffer(gpu, rng, WINDOW * kvRow);
    const b = createStorageBuffer(gpu, WINDOW * kvRow * 2);
    writeBuffer(gpu, b, randomF16Bytes(rng, WINDOW * kvRow));
    return b;
  };
  const kCache = cache();
  const vCache = cache();
  const out = createStorageBuffer(gpu, tokens * HEADS * HEAD_DIM * 4);
  const partials = createAttentionPartials(gpu, HEADS, HEAD_DIM);
  const keys = Math.min(WINDOW, pos0 + tokens);
  return {
    name: `attention ${HEADS}/${KV_HEADS} heads ${tokens === 1 ? strategy : prefill} ${kvCache}, ${keys} keys, ${tokens === 1 ? 'decode' : `prefill ${tokens}`}`,
    bytes: 2 * keys * kvRow * kvBytesPerElement(kvCache) + 2 * tokens * HEADS * HEAD_DIM * 4,
    flops: 4 * tokens * HEADS * HEAD_DIM * (pos0 + (tokens + 1) / 2),
    calls: tokens === 1 ? 16 : 1,
    record: (enc) =>
      attention(enc, {
        q, kNew, vNew, kCache, vCache, out, tokens, pos0, heads: HEADS, kvHeads: KV_HEADS, headDim: HEAD_DIM,
        slots: WINDOW, window: WINDOW, strategy, kvCache, partials, prefill,
      }),
    cleanup: () => {
      [q, kNew, vNew, kCache, vCache, out].forEach((b) => b.destroy());
      destroyAttentionPartials(partials);
    },
  };
}

/**
 * Decode attention, every strategy x cache format at 2048 and 4096 keys, interleaved: each
 * round times every variant once, so load from other processes on a shared CPU falls on all of
 * them alike. Prints the best and the median round, and the spread (max - min) / median.
 */
async function attentionDecodeComparison(gpu: Gpu, rng: Rng, copyKernel: number): Promise<void> {
  const variants: Case[] = [];
  for (const keys of [2048, 4096]) {
    for (const strategy of ATTENTION_STRATEGIES) {
      for (const kvCache of KV_CACHE_DTYPES) variants.push(attentionCase(gpu, rng, 1, keys - 1, strategy, kvCache));
    }
  }
  await interleaved(gpu, 'decode attention', variants, copyKernel);
}

/** Prefill attention, 128 tokens after 2048, every prefill strategy x cache format, interleaved as above. */
async function attentionPrefillComparison(gpu: Gpu, rng: Rng, copyKernel: number): Promise<void> {
  const variants: Case[] = [];
  for (const prefill of PREFILL_ATTENTION_STRATEGIES) {
    for (const kvCache of KV_CACHE_DTYPES) variants.push(attentionCase(gpu, rng, 128, 2048, 'tiled', kvCache, prefill));
  }
  await interleaved(gpu, 'prefill attention', variants, copyKernel);
}

/** Times `variants` in interleaved rounds (each round runs every variant once) and prints best, median, spread. */
async function interleaved(gpu: Gpu, title: string, variants: Case[], copyKernel: number): Promise<void> {
  const rounds = quick ? 3 : 7;
  const times: number[][] = variants.map(() => []);
  for (const v of variants) await timeCalls(gpu, { record: v.record, calls: 1 }); // compile, warm up
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < variants.length; i++) {
      const v = variants[i]!;
      const t0 = performance.now();
      const enc = new Encoder(gpu);
      for (let c = 0; c < v.calls; c++) v.record(enc, { matvec: 'rows' });
      enc.submit();
      await gpu.device.queue.onSubmittedWorkDone();
      times[i]!.push((performance.now() - t0) / 1000 / v.calls);
    }
  }
  console.log(`\n${title}, ${rounds} interleaved rounds of ${variants[0]!.calls} calls per variant:`);
  console.log(`${'kernel'.padEnd(58)} ${'best ms'.padStart(9)} ${'median'.padStart(9)} ${'spread'.padStart(7)} ${'GB/s'.padStart(7)} ${'vs copy kernel'.padStart(15)}`);
  variants.forEach((v, i) => {
    const t = [...times[i]!].sort((a, b) => a - b);
    const best = t[0]!;
    const median = t[Math.floor(t.length / 2)]!;
    const rate = v.bytes / best;
    console.log(
      `${v.name.padEnd(58)} ${(best * 1000).toFixed(2).padStart(9)} ${(median * 1000).toFixed(2).padStart(9)} ` +
        `${(((t[t.length - 1]! - best) / median) * 100).toFixed(0).padStart(6)}% ${gbs(rate).padStart(7)} ${(rate / copyKernel).toFixed(2).padStart(14)}x`,
    );
    v.cleanup?.();
  });
}

/**
 * The front of each decoder block at decode (1 token), 7B shapes, under every fusion (plan.fuse)
 * and matvec strategy: rms_norm + q/k/v_proj, and rms_norm + gate/up SwiGLU. Variants
 * interleaved round by round; best and median per call. Bytes: weights + x + norm + outputs.
 */
async function fusionComparison(gpu: Gpu, rng: Rng, copyKernel: number, strategies: KernelPlan['matvec'][]): Promise<void> {
  const x = randomF32Buffer(gpu, rng, HIDDEN, 'x');
  const norm = randomF32Buffer(gpu, rng, HIDDEN, 'norm');
  const h = createStorageBuffer(gpu, HIDDEN * 4);
  const qProj = randomMatrixF16(gpu, rng, HEADS * HEAD_DIM, HIDDEN, 'q_proj');
  const kProj = randomMatrixF16(gpu, rng, KV_HEADS * HEAD_DIM, HIDDEN, 'k_proj');
  const vProj = randomMatrixF16(gpu, rng, KV_HEADS * HEAD_DIM, HIDDEN, 'v_proj');
  const gate = randomMatrixF16(gpu, rng, INTERMEDIATE, HIDDEN, 'gate_proj');
  const up = randomMatrixF16(gpu, rng, INTERMEDIATE, HIDDEN, 'up_proj');
  const q = createStorageBuffer(gpu, HEADS * HEAD_DIM * 4);
  const k = createStorageBuffer(gpu, KV_HEADS * HEAD_DIM * 4);
  const v = createStorageBuffer(gpu, KV_HEADS * HEAD_DIM * 4);
  const y = createStorageBuffer(gpu, INTERMEDIATE * 4);
  const qkvRows = (HEADS + 2 * KV_HEADS) * HEAD_DIM;
  const blocks = [
    {
      name: `rms_norm + q/k/v_proj ${qkvRows}x${HIDDEN} f16`,
      bytes: qkvRows * HIDDEN * 2 + 2 * HIDDEN * 4 + qkvRows * 4,
      calls: 8,
      record: (enc: Encoder, plan: Pick<KernelPlan, 'matvec' | 'fuse'>) =>
        normQKV(enc, { x, norm: { weight: norm, eps: 1e-5 }, h, q_proj: qProj, k_proj: kProj, v_proj: vProj, q, k, v, tokens: 1, plan }),
    },
    {
      name: `rms_norm + gate/up SwiGLU 2x${INTERMEDIATE}x${HIDDEN} f16`,
      bytes: 2 * INTERMEDIATE * HIDDEN * 2 + 2 * HIDDEN * 4 + INTERMEDIATE * 4,
      calls: 2,
      record: (enc: Encoder, plan: Pick<KernelPlan, 'matvec' | 'fuse'>) =>
        normSwiGLU(enc, { x, norm: { weight: norm, eps: 1e-5 }, h, gate, up, y, tokens: 1, plan }),
    },
  ];
  const rounds = quick ? 3 : 7;
  for (const b of blocks) {
    const plans = strategies.flatMap((matvec) => PLAN_CHOICES.fuse.map((fuse) => ({ matvec, fuse })));
    const times: number[][] = plans.map(() => []);
    const run = async (plan: (typeof plans)[number], calls: number) => {
      const t0 = performance.now();
      const enc = new Encoder(gpu);
      for (let c = 0; c < calls; c++) b.record(enc, plan);
      enc.submit();
      await gpu.device.queue.onSubmittedWorkDone();
      return (performance.now() - t0) / 1000 / calls;
    };
    for (const plan of plans) await run(plan, 1); // compile, warm up
    for (let r = 0; r < rounds; r++) for (let i = 0; i < plans.length; i++) times[i]!.push(await run(plans[i]!, b.calls));
    console.log(`\n${b.name}, decode, ${rounds} interleaved rounds of ${b.calls} calls:`);
    plans.forEach((plan, i) => {
      const t = [...times[i]!].sort((a, c) => a - c);
      const best = t[0]!;
      const median = t[Math.floor(t.length / 2)]!;
      const name = `matvec=${plan.matvec},fuse=${plan.fuse}`;
      console.log(
        `${name.padEnd(40)} best ${(best * 1000).toFixed(2).padStart(8)} ms  median ${(median * 1000).toFixed(2).padStart(8)} ms  ` +
          `${gbs(b.bytes / best).padStart(6)} GB/s  ${(b.bytes / best / copyKernel).toFixed(2)}x copy kernel`,
      );
    });
  }
  for (const m of [qProj, kProj, vProj, gate, up]) destroyMatrix(m);
  for (const b of [x, norm, h, q, k, v, y]) b.destroy();
}

/** A random matrix of GGUF type `type` packed as the loader packs it (pack.ts). */
function randomGgmlMatrix(gpu: Gpu, rng: Rng, type: GgmlType, rows: number, cols: number, label: string): GpuMatrix {
  const file = randomBlocks(type, (rows * cols) / GGML_TYPES[type].blockValues, rng);
  const m = allocateMatrix(gpu, rows, cols, ggmlDeviceDType(type), label);
  const fileRowBytes = (cols / GGML_TYPES[type].blockValues) * GGML_TYPES[type].blockBytes;
  for (const part of m.parts) {
    const rowsBytes = file.subarray(part.row0 * fileRowBytes, (part.row0 + part.rows) * fileRowBytes);
    for (const w of packGgmlRows(type, rowsBytes, part.rows, cols, 0, part.rows)) writeBuffer(gpu, part.buffer, w.data, w.offset);
  }
  return m;
}

/**
 * Decode (1 token) matvec at each 7B shape over the two formats of a Q4_K_M file (q4_k for most
 * matrices, q6_k for lm_head and some down_proj / v_proj) against the project's q4, under the
 * first matvec strategy: variants interleaved round by round. Bytes: the weights as stored.
 */
async function ggmlDecodeComparison(gpu: Gpu, rng: Rng, copyKernel: number, matvec: KernelPlan['matvec']): Promise<void> {
  const shapes: Array<[string, number, number]> = [['q/o_proj', HIDDEN, HIDDEN], ['gate/up_proj', INTERMEDIATE, HIDDEN], ['down_proj', HIDDEN, INTERMEDIATE], ['lm_head', VOCAB, HIDDEN]];
  for (const [label, rows, cols] of shapes) {
    const x = randomF32Buffer(gpu, rng, cols);
    const y = createStorageBuffer(gpu, rows * 4);
    const variants: Case[] = (['q4', 'Q4_K', 'Q6_K'] as const).map((f) => {
      const w = f === 'q4' ? randomQuantMatrix(gpu, rng, rows, cols, 'q4').matrix : randomGgmlMatrix(gpu, rng, f, rows, cols, label);
      return {
        name: `matmul ${label} ${rows}x${cols} ${w.dtype}, decode, matvec=${matvec}`,
        bytes: rows * matrixRowBytes(w.dtype, cols),
        flops: 2 * rows * cols,
        calls: 4,
        record: (enc: Encoder) => matmul(enc, { x, w, y, tokens: 1, plan: { matvec } }),
        cleanup: () => destroyMatrix(w),
      };
    });
    await interleaved(gpu, `GGUF block formats vs q4, ${label}`, variants, copyKernel);
    x.destroy();
    y.destroy();
  }
}

const gpu = await getGpu();
const rng = new Rng(1234);
console.log(`device: ${gpu.report.description || gpu.report.device}${gpu.report.isSoftware ? ' [software]' : ''}`);
const copy = await copyBandwidth(gpu);
console.log(`copy bandwidth (bytes read/s; as many written): copyBufferToBuffer ${gbs(copy.copyBuffer)} GB/s, WGSL copy kernel ${gbs(copy.copyKernel)} GB/s\n`);
console.log(`${'kernel'.padEnd(72)} ${'ms/call'.padStart(9)} ${'GB/s'.padStart(7)} ${'GFLOP/s'.padStart(8)} ${'vs copy kernel'.padStart(15)}`);
const strategies = matvecArg ? matvecArg.split(',').map((v) => parsePlan(`matvec=${v}`, '--matvec').matvec!) : runnable(gpu.profile, 'matvec');
console.log(`matvec strategies compared (interleaved): ${strategies.join(', ')}\n`);
for (const make of [...matrixCases(gpu, rng), ...otherCases(gpu, rng)]) {
  const c = make();
  if (only && !c.name.includes(only)) {
    c.cleanup?.();
    continue;
  }
  const plans = c.byPlan ? strategies.map((matvec) => ({ matvec })) : [{ matvec: 'rows' as const }];
  const times = await timeCalls(gpu, c, plans);
  times.forEach((s, i) => {
    const rate = c.bytes / s;
    const name = c.byPlan ? `${c.name}, matvec=${plans[i]!.matvec}` : c.name;
    console.log(
      `${name.padEnd(72)} ${(s * 1000).toFixed(2).padStart(9)} ${gbs(rate).padStart(7)} ${(c.flops / s / 1e9).toFixed(2).padStart(8)} ${(rate / copy.copyKernel).toFixed(2).padStart(14)}x`,
    );
  });
  c.cleanup?.();
}
if (!only || 'attention decode'.includes(only)) await attentionDecodeComparison(gpu, rng, copy.copyKernel);
if (!only || 'attention prefill'.includes(only)) await attentionPrefillComparison(gpu, rng, copy.copyKernel);
if (!only || 'fused'.includes(only)) await fusionComparison(gpu, rng, copy.copyKernel, strategies);
if (!only || 'ggml'.includes(only)) await ggmlDecodeComparison(gpu, rng, copy.copyKernel, strategies[0]!);
await releaseGpu();
