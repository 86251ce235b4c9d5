/**
 * LoRA on the WebGPU model against the CPU model with the adapter merged into the
 * weights (W + scale B A), on the tiny checkpoint, with adapters written here in
 * PEFT's layout: several ranks and dtypes, subsets of the projections, rsLoRA,
 * rank_pattern. Tolerance as the golden tests: max |GPU - CPU| below 1e-5 of the
 * reference logits' range.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getGpu } from '../gpu/device.ts';
import { runnable } from '../kernels/plan.ts';
import { loadConfig } from './config.ts';
import { CpuModel } from './cpu.ts';
import { MistralModel } from './model.ts';
import { loadLora, type DeviceLora, type LoraWeights } from './lora.ts';
import { allModules, writePeftAdapter, type AdapterSpec } from './lora.testing.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, maxAbsError } from '../util/testing.ts';

const TINY = fileURLToPath(new URL('../../golden/tiny-mistral/', import.meta.url));
const config = await loadConfig(TINY);
const REL_TOL = 1e-5;
const seed = freshSeed();
const root = mkdtempSync(join(tmpdir(), 'lora-model-'));

/** The adapters under test, by name. */
const SPECS: Record<string, Omit<AdapterSpec, 'seed'>> = {
  // The common recipe: attention q and v, rank 8, f32.
  qv_r8_f32: { config: { r: 8, lora_alpha: 16, target_modules: ['q_proj', 'v_proj'] }, modules: allModules(config, 8, ['q_proj', 'v_proj']) },
  // Every projection in f16, per-module ranks (odd ones too) and alphas.
  all_f16_patterns: {
    config: { r: 4, lora_alpha: 8, target_modules: 'all-linear', rank_pattern: { down_proj: 3, 'layers.1.self_attn.o_proj': 12 }, alpha_pattern: { gate_proj: 32 } },
    modules: allModules(config, 4).map(([i, k]) => [i, k, k === 'down_proj' ? 3 : i === 1 && k === 'o_proj' ? 12 : 4]),
    dtype: 'F16',
  },
  // rsLoRA on the MLP input only (the unfused SwiGLU path), one layer, bf16.
  mlp_rslora_bf16: {
    config: { r: 16, lora_alpha: 8, use_rslora: true, target_modules: ['gate_proj', 'up_proj', 'k_proj'], layers_to_transform: [1] },
    modules: allModules(config, 16, ['k_proj', 'gate_proj', 'up_proj']).filter(([i]) => i === 1),
    dtype: 'BF16',
  },
  // Rank 1 on o_proj and down_proj (the residual-accumulating projections).
  residual_r1: { config: { r: 1, lora_alpha: 2, target_modules: ['o_proj', 'down_proj'] }, modules: allModules(config, 1, ['o_proj', 'down_proj']) },
};
const NAMES = Object.keys(SPECS);
/** Every matvec strategy this device runs (the projections the updates sit beside). */
const MATVEC = runnable((await getGpu()).profile, 'matvec');

let gpuModel: MistralModel;
const host = new Map<string, LoraWeights>();
const device = new Map<string, DeviceLora>();
/** The merged CPU reference's logits for IDS, per adapter ('' for the base model). */
const expected = new Map<string, Float32Array>();
let ids: number[];

beforeAll(async () => {
  const rng = new Rng(seed);
  ids = Array.from({ length: 37 }, () => 1 + Math.floor(rng.next() * (config.vocab_size - 1))); // longer than the window (16)
  // maxChunk 10: a 37-token prompt runs as 4 chunks.
  gpuModel = await MistralModel.load(await getGpu(), TINY, { maxChunk: 10 });
  expected.set('', (await CpuModel.load(TINY)).forward(ids));
  for (const [i, name] of NAMES.entries()) {
    const dir = join(root, name);
    await writePeftAdapter(dir, config, { seed: seed + i + 1, ...SPECS[name]! });
    const w = await loadLora(dir, config, name);
    host.set(name, w);
    device.set(name, gpuModel.addAdapter(w));
    expected.set(name, (await CpuModel.load(TINY, { lora: w })).forward(ids));
  }
}, 120_000);

/** Relative errors reached, printed at the end (the figures the README quotes). */
const reached: string[] = [];

afterAll(async () => {
  if (reached.length) console.log(`LoRA vs merged CPU reference, max abs error / logit range:\n  ${reached.join('\n  ')}`);
  gpuModel?.destroy();
  rmSync(root, { recursive: true, force: true });
});

function range(a: Float32Array): number {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of a) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  return hi - lo;
}

function expectClose(actual: Float32Array, name: string, what: string): void {
  const ref = expected.get(name)!;
  const err = maxAbsError(actual, ref);
  reached.push(`${(name || 'base').padEnd(18)} ${what.padEnd(18)} ${(err / range(ref)).toExponential(2)}`);
  expect(err, `${what} under ${name || 'the base model'} (seed ${seed}): max abs error ${err}, range ${range(ref)}`).toBeLessThan(REL_TOL * range(ref));
}

/** Every position's logits, fed one token at a time from position 0 under adapter `name`. */
async function tokenByToken(name: string): Promise<Float32Array> {
  gpuModel.reset();
  const V = config.vocab_size;
  const rows = new Float32Array(ids.length * V);
  for (let t = 0; t < ids.length; t++) {
    rows.set((await gpuModel.forward([ids[t]!], { kind: 'logits' }, device.get(name))).logits!, t * V);
  }
  return rows;
}

describe('WebGPU with LoRA adapters against the merged CPU reference', () => {
  it('each adapter changes the logits far beyond the tolerance (the comparison is not vacuous)', async () => {
    for (const name of NAMES) {
      const d = maxAbsError(expected.get(name)!, expected.get('')!);
      expect(d, name).toBeGreaterThan(1000 * REL_TOL * range(expected.get('')!));
    }
  });

  // Each matvec strategy in turn, on the one loaded model (replan).
  for (const matvec of MATVEC) {
    for (const name of NAMES) {
      it(`${name}, matvec=${matvec}: whole prompt in chunks of 10`, async () => {
        gpuModel.replan({ matvec });
        gpuModel.reset();
        const out = await gpuModel.forward(ids, { kind: 'all-logits' }, device.get(name));
        expectClose(out.logits!, name, `prefill ${matvec}`);
      });

      it(`${name}, matvec=${matvec}: token by token through the rolling KV cache`, async () => {
        gpuModel.replan({ matvec });
        expectClose(await tokenByToken(name), name, `decode ${matvec}`);
      });
    }
  }

  // The folded norm (fuse=norm+qkv) must still leave h for the updates that read it.
  for (const name of NAMES) {
    it(`${name}, fuse=norm+qkv: token by token`, async () => {
      gpuModel.replan({ fuse: 'norm+qkv' });
      expectClose(await tokenByToken(name), name, 'decode fuse=norm+qkv');
    });
  }

  it('requests back to back under different adapters each get their own logits (and the base model its own)', async () => {
    gpuModel.replan({});
    for (const name of ['qv_r8_f32', '', 'mlp_rslora_bf16', 'qv_r8_f32', 'all_f16_patterns', '']) {
      gpuModel.rewind(gpuModel.reusablePrefix(ids, device.get(name)));
      expect(gpuModel.position, `nothing computed under another adapter is kept for ${name || 'the base model'}`).toBe(0);
      const out = await gpuModel.forward(ids, { kind: 'all-logits' }, device.get(name));
      expectClose(out.logits!, name, 'back to back');
    }
  });

  it('the KV cache prefix is reused only under the adapter that computed it', async () => {
    const a = device.get('qv_r8_f32')!;
    const b = device.get('residual_r1')!;
    gpuModel.reset();
    await gpuModel.forward(ids.slice(0, 10), { kind: 'none' }, a);
    const longer = ids.slice(0, 12);
    expect(gpuModel.reusablePrefix(longer, a)).toBe(10);
    expect(gpuModel.reusablePrefix(longer, b)).toBe(0);
    expect(gpuModel.reusablePrefix(longer)).toBe(0);
    await expect(gpuModel.forward(longer.slice(10), { kind: 'none' }, b)).rejects.toThrow(/computed under adapter qv_r8_f32, not adapter residual_r1: rewind\(0\) first/);
    await expect(gpuModel.forward(longer.slice(10), { kind: 'none' })).rejects.toThrow(/not the base model/);
    // Continuing under the same adapter from the kept prefix gives the same logits as running it whole.
    const last = await gpuModel.forward(ids.slice(10), { kind: 'all-logits' }, a);
    const V = config.vocab_size;
    const err = maxAbsError(last.logits!, expected.get('qv_r8_f32')!.subarray(10 * V));
    expect(err).toBeLessThan(REL_TOL * range(expected.get('qv_r8_f32')!));
  });
});
