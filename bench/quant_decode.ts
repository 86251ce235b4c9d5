/**
 * Decode speed of the quantized formats against the checkpoint's own format, on one device,
 * in one process: every model is loaded once, then rounds of greedy decode steps run model
 * after model (interleaved), so the machine's noise falls on all of them alike. Reports the
 * median seconds per token of each, the ratio to the unquantized model, the weights' bytes on
 * the device, and the peak RSS after each load.
 *
 *   npx tsx bench/quant_decode.ts DIR [--formats none,q8,q4,dir:DIR2] [--tokens 8] [--rounds 3]
 *
 * `none` is DIR as stored, q8/q4 quantize DIR at load, `dir:DIR2` loads another folder as stored
 * (one written by `openchat quantize`: no quantizing at load, which takes minutes on 2 cores).
 *
 *   npx tsx bench/quant_decode.ts --kernels [--shapes 7b|1b] [--formats q4,q8] [--rounds 7] [--mb 700]
 *
 * The one-token products alone, under the plan's matvec, at a model's shapes (q/o 4096x4096,
 * gate+up 14336x4096 as one SwiGLU, down 4096x14336, lm_head 32002x4096; or 1b's), with random
 * weights and no checkpoint (a 7B one is 14.5 GB): f16 against each format, rounds interleaved.
 * Each timed run walks copies of the matrix adding up to --mb MB, so the weights come from DRAM,
 * not the CPU's cache, as in a decode step.
 */
import { getGpu } from '../src/gpu/device.ts';
import { MistralModel } from '../src/model/model.ts';
import { resourceUsage } from 'node:process';
import type { QuantFormat } from '../src/gpu/buffers.ts';
import { formatPlan, resolvePlan } from '../src/kernels/plan.ts';
import { allocateMatrix, createStorageBuffer, destroyMatrix, quantLayout, uploadF32, uploadMatrix, writeBuffer, type GpuMatrix } from '../src/gpu/buffers.ts';
import { Encoder } from '../src/gpu/encoder.ts';
import { matmul, matmulSwiGLU } from '../src/kernels/matmul/index.ts';
import { randomWeights } from '../src/kernels/matmul/fixtures.ts';
import { Rng } from '../src/util/rng.ts';

const dir = process.argv[2];
if (!dir) throw new Error('usage: npx tsx bench/quant_decode.ts DIR [--formats none,q8,q4] [--tokens N] [--rounds R], or --kernels [--shapes 7b|1b] [--formats q4,q8] [--rounds R] [--mb MB]');
const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : def;
};
if (dir === '--kernels') {
  await kernels();
  process.exit(0);
}
const formats = arg('--formats', 'none,q8,q4').split(',');
const tokens = Number(arg('--tokens', '8'));
const rounds = Number(arg('--rounds', '3'));

const gpu = await getGpu();
const models: { name: string; model: MistralModel; loadSeconds: number; rssGB: number; times: number[] }[] = [];
for (const f of formats) {
  const t0 = performance.now();
  const other = f.startsWith('dir:') ? f.slice(4) : null;
  const model = await MistralModel.load(gpu, other ?? dir, { contextLength: 256, quantize: other || f === 'none' ? undefined : (f as QuantFormat) });
  const loadSeconds = (performance.now() - t0) / 1000;
  const rssGB = (resourceUsage().maxRSS * 1024) / 1e9;
  console.error(`loaded ${f} in ${loadSeconds.toFixed(1)} s: weights ${(model.weightDeviceBytes / 1e9).toFixed(3)} GB on the device, peak RSS so far ${rssGB.toFixed(2)} GB, plan ${formatPlan(model.plan)}`);
  // Warm-up: compiles every pipeline of prefill and decode.
  await model.forward([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], { kind: 'argmax' });
  await model.forward([5], { kind: 'argmax' });
  models.push({ name: f, model, loadSeconds, rssGB, times: [] });
}
for (let r = 0; r < rounds; r++) {
  for (const m of models) {
    m.model.reset();
    let next = (await m.model.forward([1, 2, 3, 4], { kind: 'argmax' })).argmax!;
    const t0 = performance.now();
    for (let i = 0; i < tokens; i++) next = (await m.model.forward([next], { kind: 'argmax' })).argmax!;
    m.times.push((performance.now() - t0) / 1000 / tokens);
  }
  console.error(`round ${r + 1}: ${models.map((m) => `${m.name} ${(m.times[r]! * 1000).toFixed(0)} ms/token`).join(', ')}`);
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const base = median(models[0]!.times);
console.log(`| weights | on the device | decode ms/token (median of ${rounds} x ${tokens}) | tok/s | speed vs ${models[0]!.name} |`);
console.log('|---|---:|---:|---:|---:|');
for (const m of models) {
  const t = median(m.times);
  console.log(`| ${m.name === 'none' ? 'as stored' : m.name} | ${(m.model.weightDeviceBytes / 1e9).toFixed(3)} GB | ${(t * 1000).toFixed(0)} | ${(1 / t).toFixed(2)} | ${(base / t).toFixed(2)}x |`);
}
for (const m of models) m.model.destroy();

async function kernels(): Promise<void> {
  const shapes = {
    '7b': [['q_proj', 4096, 4096], ['gate+up', 14336, 4096], ['down_proj', 4096, 14336], ['lm_head', 32002, 4096]],
    '1b': [['q_proj', 2048, 2048], ['gate+up', 5632, 2048], ['down_proj', 2048, 5632], ['lm_head', 32000, 2048]],
  }[arg('--shapes', '7b')] as [string, number, number][] | undefined;
  if (!shapes) throw new Error('--shapes is 7b or 1b');
  const qformats = arg('--formats', 'q4,q8').split(',') as QuantFormat[];
  const rounds = Number(arg('--rounds', '7'));
  const target = Number(arg('--mb', '700')) * 1e6;
  const gpu = await getGpu();
  const plan = resolvePlan(gpu.profile);
  const rng = new Rng(1);
  // Random codes and scales in [2^-7, 2^-6): timing only, so no quantizing (minutes in TypeScript).
  const random = (rows: number, cols: number, f: QuantFormat | 'f16'): GpuMatrix => {
    if (f === 'f16') return uploadMatrix(gpu, randomWeights(rng, rows * cols, 'f16'), rows, cols, 'f16', 'w');
    const m = allocateMatrix(gpu, rows, cols, f, 'w');
    const L = quantLayout(f, cols);
    for (const part of m.parts) {
      const words = new Uint32Array((part.rows * L.rowBytes) / 4);
      for (let i = 0; i < words.length; i++) words[i] = rng.nextU32();
      const scales = new Uint16Array(words.buffer, part.rows * L.codeRowBytes);
      for (let i = 0; i < scales.length; i++) scales[i] = 0x2000 | (rng.nextU32() & 0x3ff);
      writeBuffer(gpu, part.buffer, words);
    }
    return m;
  };
  console.log(`plan ${formatPlan(plan)}; ms per product, median of ${rounds} interleaved rounds; speed vs f16`);
  console.log(`| matrix | f16 ms | ${qformats.map((f) => `${f} ms | ${f} vs f16`).join(' | ')} |`);
  console.log(`|---|---:|${qformats.map(() => '---:|---:').join('|')}|`);
  for (const [name, rows, cols] of shapes) {
    const swiglu = name === 'gate+up';
    const x = uploadF32(gpu, Float32Array.from({ length: cols }, () => rng.nextU32() / 2 ** 32 - 0.5));
    const y = createStorageBuffer(gpu, rows * 4);
    const sets = (['f16', ...qformats] as const).map((f) => {
      const one = random(rows, cols, f);
      const bytes = one.parts.reduce((a, p) => a + p.buffer.size, 0) * (swiglu ? 2 : 1);
      const copies = Array.from({ length: Math.max(1, Math.ceil(target / bytes)) }, (_, c) =>
        Array.from({ length: swiglu ? 2 : 1 }, (_, j) => (c === 0 && j === 0 ? one : random(rows, cols, f))));
      return { f, copies, times: [] as number[] };
    });
    for (let r = 0; r < rounds + 1; r++) {
      for (const set of sets) {
        const enc = new Encoder(gpu);
        for (const [w, up] of set.copies) {
          if (up) matmulSwiGLU(enc, { x, gate: w!, up, y, tokens: 1, plan });
          else matmul(enc, { x, w: w!, y, tokens: 1, plan });
        }
        const t0 = performance.now();
        enc.submit();
        await gpu.device.queue.onSubmittedWorkDone();
        // Round 0 compiles the pipelines: not counted.
        if (r > 0) set.times.push((performance.now() - t0) / set.copies.length);
      }
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const base = median(sets[0]!.times);
    console.log(`| ${name} ${rows}x${cols} | ${base.toFixed(2)} | ${sets.slice(1).map((s) => `${median(s.times).toFixed(2)} | ${(base / median(s.times)).toFixed(2)}x`).join(' | ')} |`);
    for (const set of sets) for (const ms of set.copies) for (const m of ms) destroyMatrix(m);
    x.destroy();
    y.destroy();
  }
}
