/**
 * What a LoRA adapter costs at the Mistral-7B shapes: `npx tsx bench/lora.ts [--rank R] [--quick]`.
 *
 * For q_proj (4096 x 4096), down_proj (4096 x 14336) and the MLP input (gate and up, 14336 x 4096
 * each), decode (1 token) and prefill (128 tokens), it times the projection alone and the
 * projection with its LoRA update (loraUpdate, rank R, default 16), and for the MLP input the
 * fused matmulSwiGLU against the unfused path an adapter on gate_proj or up_proj takes (two
 * matmuls, two updates, silu_mul). Variants are timed interleaved, round after round, and the
 * best of each is kept, so a busy shared machine slows them alike. Weights f16, adapters f32.
 */
import { getGpu, releaseGpu, type Gpu } from '../src/gpu/device.ts';
import { allocateMatrix, createStorageBuffer, destroyMatrix, uploadF32, writeBuffer, type GpuMatrix } from '../src/gpu/buffers.ts';
import { Encoder } from '../src/gpu/encoder.ts';
import { matmul, matmulSwiGLU } from '../src/kernels/matmul/index.ts';
import { resolvePlan } from '../src/kernels/plan.ts';
import { loraUpdate, siluMul, type LoraMatrices } from '../src/kernels/lora/index.ts';
import { Rng } from '../src/util/rng.ts';
import { randomNormal } from '../src/util/testing.ts';
import { f32ToF16 } from '../src/util/half.ts';

const argv = process.argv.slice(2);
const RANK = argv.includes('--rank') ? Number(argv[argv.indexOf('--rank') + 1]) : 16;
const ROUNDS = argv.includes('--quick') ? 2 : 4;
const HIDDEN = 4096;
const INTERMEDIATE = 14336;

function f16Matrix(gpu: Gpu, rng: Rng, rows: number, cols: number): GpuMatrix {
  const m = allocateMatrix(gpu, rows, cols, 'f16');
  const pattern = new Uint16Array(1 << 16).map(() => f32ToF16(rng.next() * 0.1 - 0.05));
  for (const p of m.parts) {
    const words = new Uint16Array(p.rows * cols);
    for (let i = 0; i < words.length; i += pattern.length) words.set(pattern.subarray(0, Math.min(pattern.length, words.length - i)), i);
    writeBuffer(gpu, p.buffer, words);
  }
  return m;
}

function adapter(gpu: Gpu, rng: Rng, outFeatures: number, inFeatures: number): LoraMatrices {
  return {
    a: uploadF32(gpu, randomNormal(rng, RANK * inFeatures, 0.02)),
    b: uploadF32(gpu, randomNormal(rng, outFeatures * RANK, 0.02)),
    rank: RANK,
    inFeatures,
    outFeatures,
    scale: 2,
  };
}

async function time(gpu: Gpu, calls: number, record: (enc: Encoder) => void): Promise<number> {
  const t0 = performance.now();
  const enc = new Encoder(gpu);
  for (let i = 0; i < calls; i++) record(enc);
  enc.submit();
  await gpu.device.queue.onSubmittedWorkDone();
  return (performance.now() - t0) / calls;
}

async function main(): Promise<void> {
  const gpu = await getGpu();
  const plan = resolvePlan(gpu.profile);
  const rng = new Rng(1);
  const q = f16Matrix(gpu, rng, HIDDEN, HIDDEN);
  const down = f16Matrix(gpu, rng, HIDDEN, INTERMEDIATE);
  const gate = f16Matrix(gpu, rng, INTERMEDIATE, HIDDEN);
  const up = f16Matrix(gpu, rng, INTERMEDIATE, HIDDEN);
  const qLora = adapter(gpu, rng, HIDDEN, HIDDEN);
  const downLora = adapter(gpu, rng, HIDDEN, INTERMEDIATE);
  const gateLora = adapter(gpu, rng, INTERMEDIATE, HIDDEN);
  const upLora = adapter(gpu, rng, INTERMEDIATE, HIDDEN);
  const T = 128;
  const x = uploadF32(gpu, randomNormal(rng, T * INTERMEDIATE));
  const y = createStorageBuffer(gpu, T * INTERMEDIATE * 4);
  const y2 = createStorageBuffer(gpu, T * INTERMEDIATE * 4);
  const u = createStorageBuffer(gpu, T * RANK * 4);

  console.log(`${gpu.report.description}; LoRA rank ${RANK}; best of ${ROUNDS} interleaved rounds; ms per call`);
  for (const tokens of [1, T]) {
    const calls = tokens === 1 ? 8 : 1;
    const cases: [string, (enc: Encoder) => void][] = [
      ['q_proj', (enc) => matmul(enc, { x, w: q, y, tokens, plan })],
      ['q_proj + lora', (enc) => (matmul(enc, { x, w: q, y, tokens, plan }), loraUpdate(enc, { x, lora: qLora, y, u, tokens }))],
      ['down_proj', (enc) => matmul(enc, { x, w: down, y, tokens, accumulate: true, plan })],
      ['down_proj + lora', (enc) => (matmul(enc, { x, w: down, y, tokens, accumulate: true, plan }), loraUpdate(enc, { x, lora: downLora, y, u, tokens }))],
      ['swiglu fused', (enc) => matmulSwiGLU(enc, { x, gate, up, y, tokens, plan })],
      [
        'swiglu unfused + lora gate, up',
        (enc) => {
          matmul(enc, { x, w: gate, y, tokens, plan });
          loraUpdate(enc, { x, lora: gateLora, y, u, tokens });
          matmul(enc, { x, w: up, y: y2, tokens, plan });
          loraUpdate(enc, { x, lora: upLora, y: y2, u, tokens });
          siluMul(enc, { gate: y, up: y2, n: tokens * INTERMEDIATE });
        },
      ],
    ];
    const best = cases.map(() => Infinity);
    for (const [, record] of cases) await time(gpu, 1, record); // compile
    for (let r = 0; r < ROUNDS; r++) {
      for (let i = 0; i < cases.length; i++) best[i] = Math.min(best[i]!, await time(gpu, calls, cases[i]![1]));
    }
    for (let i = 0; i < cases.length; i++) {
      const ratio = i % 2 === 1 ? `  (${(best[i]! / best[i - 1]!).toFixed(2)}x)` : '';
      console.log(`${tokens === 1 ? 'decode ' : `prefill ${tokens}`.padEnd(7)} ${cases[i]![0].padEnd(32)} ${best[i]!.toFixed(2).padStart(9)}${ratio}`);
    }
  }
  for (const m of [q, down, gate, up]) destroyMatrix(m);
  for (const l of [qLora, downLora, gateLora, upLora]) (l.a.destroy(), l.b.destroy());
  for (const b of [x, y, y2, u]) b.destroy();
  await releaseGpu();
}

await main();
