/**
 * Quantized weights, correctness only: the WebGPU forward pass with `quantize` against the
 * CPU reference forward pass over the same quantized weights dequantized plainly
 * (CpuModel.load(dir, { quantize })), on the golden cases, under every matvec plan. Both
 * compute with identical weights, so they must agree to f32 noise, like the unquantized
 * golden test. How far each format drifts from Hugging Face (quality) is a measurement,
 * not a test: bench/quant_quality.ts, figures in bench/RESULTS.md.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getGpu } from '../src/gpu/device.ts';
import { MistralModel } from '../src/model/model.ts';
import { CpuModel } from '../src/model/cpu.ts';
import { runnable } from '../src/kernels/plan.ts';
import { QUANT_FORMATS } from '../src/gpu/buffers.ts';

const DIR = new URL('./tiny-mistral/', import.meta.url).pathname;
const manifest = JSON.parse(readFileSync(DIR + 'golden.json', 'utf8')) as { cases: { id: string; input_ids: number[] }[] };
const VOCAB = 32002;

/** As golden.test.ts: max |GPU - CPU| over a case's logits, at most 1e-5 of their range. */
const REL_TOL = 1e-5;

function relError(actual: Float32Array, expected: Float32Array): number {
  expect(actual.length).toBe(expected.length);
  let lo = Infinity;
  let hi = -Infinity;
  let abs = 0;
  for (let i = 0; i < expected.length; i++) {
    lo = Math.min(lo, expected[i]!);
    hi = Math.max(hi, expected[i]!);
    const d = Math.abs(actual[i]! - expected[i]!);
    abs = Number.isNaN(d) ? Infinity : Math.max(abs, d);
  }
  return abs / (hi - lo);
}

const MATVEC = runnable((await getGpu()).profile, 'matvec');
const caseD = manifest.cases.find((c) => c.id.startsWith('d'))!;

describe.each(QUANT_FORMATS.flatMap((f) => MATVEC.map((m) => [f, m] as const)))('quantized %s, matvec=%s: WebGPU vs the CPU reference on the same weights', (format, matvec) => {
  let model: MistralModel;
  let cpu: CpuModel;
  beforeAll(async () => {
    cpu = await CpuModel.load(DIR, { quantize: format });
    model = await MistralModel.load(await getGpu(), DIR, { maxChunk: 64, quantize: format, plan: { matvec, attention: 'tiled', kvCache: 'f32' } });
  });
  afterAll(() => model?.destroy());

  // Pipelines compile for tens of seconds each on a loaded lavapipe: more time than a kernel test.
  it('every case in one prefill (the plan gemm above 8 tokens, blocks of 8 below)', async () => {
    for (const c of manifest.cases) {
      model.reset();
      cpu.reset();
      const got = (await model.forward(c.input_ids, { kind: 'all-logits' })).logits!;
      expect(relError(got, cpu.forward(c.input_ids)), `case ${c.id}`).toBeLessThan(REL_TOL);
    }
  }, 600_000);

  it('case d token by token (decode), past the 16-slot window', async () => {
    const ids = caseD.input_ids.slice(0, 24);
    model.reset();
    cpu.reset();
    const want = cpu.forward(ids);
    for (let t = 0; t < ids.length; t++) {
      const row = (await model.forward([ids[t]!], { kind: 'logits' })).logits!;
      expect(relError(row, want.subarray(t * VOCAB, (t + 1) * VOCAB)), `case d, position ${t}`).toBeLessThan(REL_TOL);
    }
  }, 600_000);
});

// Quantized prefill through each gemm strategy (gemm_read_quant.wgsl): case d (100 tokens)
// in uneven chunks, each past 8 tokens, so every chunk's products take the strategy's kernels.
const GEMMS = runnable((await getGpu()).profile, 'gemm');
const CHUNKS = [37, 9, 54];

describe.each(QUANT_FORMATS.flatMap((f) => GEMMS.map((g) => [f, g] as const)))('quantized %s, gemm=%s: WebGPU prefill in uneven chunks vs the CPU reference', (format, gemm) => {
  it(`case d in chunks of ${CHUNKS.join(', ')} tokens`, async () => {
    const cpu = await CpuModel.load(DIR, { quantize: format });
    const model = await MistralModel.load(await getGpu(), DIR, { maxChunk: 64, quantize: format, plan: { matvec: 'rows', gemm, attention: 'tiled', kvCache: 'f32' } });
    try {
      const want = cpu.forward(caseD.input_ids);
      let at = 0;
      for (const n of CHUNKS) {
        const got = (await model.forward(caseD.input_ids.slice(at, at + n), { kind: 'all-logits' })).logits!;
        expect(relError(got, want.subarray(at * VOCAB, (at + n) * VOCAB)), `case d, tokens ${at}..${at + n - 1}`).toBeLessThan(REL_TOL);
        at += n;
      }
      expect(at).toBe(caseD.input_ids.length);
    } finally {
      model.destroy();
    }
  }, 600_000);
});

describe('a folder written by openchat quantize loads on the GPU as quantizing at load does', () => {
  it('q4: identical logits (the same bytes reach the device)', { timeout: 600_000 }, async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { quantizeCheckpoint } = await import('../src/model/quantize.ts');
    const out = mkdtempSync(join(tmpdir(), 'golden-q4-'));
    try {
      await quantizeCheckpoint(DIR, out, 'q4');
      const gpu = await getGpu();
      const ids = manifest.cases[0]!.input_ids;
      const a = await MistralModel.load(gpu, out, { maxChunk: 64 });
      const b = await MistralModel.load(gpu, DIR, { maxChunk: 64, quantize: 'q4' });
      expect(a.weightDeviceBytes).toBe(b.weightDeviceBytes);
      const la = (await a.forward(ids, { kind: 'all-logits' })).logits!;
      const lb = (await b.forward(ids, { kind: 'all-logits' })).logits!;
      a.destroy();
      b.destroy();
      expect(la).toEqual(lb);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
