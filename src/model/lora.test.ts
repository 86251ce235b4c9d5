import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from './config.ts';
import { loadLora, type LinearKey } from './lora.ts';
import { allModules, writePeftAdapter, type AdapterSpec, type AdapterTensor } from './lora.testing.ts';
import { freshSeed } from '../util/testing.ts';
import { f16ToF32, f32ToF16 } from '../util/half.ts';

const TINY = fileURLToPath(new URL('../../golden/tiny-mistral/', import.meta.url));
const config = await loadConfig(TINY);
const root = mkdtempSync(join(tmpdir(), 'lora-test-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

async function write(spec: Omit<AdapterSpec, 'seed'> & { seed?: number }): Promise<{ dir: string; tensors: AdapterTensor[] }> {
  const dir = join(root, `a${n++}`);
  const tensors = await writePeftAdapter(dir, config, { seed: freshSeed(), ...spec });
  return { dir, tensors };
}

const qv = (r: number): [number, LinearKey, number][] => allModules(config, r, ['q_proj', 'v_proj']);

describe('loadLora: what is adapted and by how much', () => {
  it('reads f32 A and B exactly, scale lora_alpha / r, only the target modules', async () => {
    const { dir, tensors } = await write({ config: { r: 8, lora_alpha: 16, target_modules: ['q_proj', 'v_proj'] }, modules: qv(8) });
    const w = await loadLora(dir, config, 'mine');
    expect(w.name).toBe('mine');
    expect(w.modules).toBe(4);
    expect(w.maxRank).toBe(8);
    for (let i = 0; i < 2; i++) {
      expect(Object.keys(w.layers[i]!).sort()).toEqual(['q_proj', 'v_proj']);
      const q = w.layers[i]!.q_proj!;
      expect([q.rank, q.scale, q.inFeatures, q.outFeatures]).toEqual([8, 2, 64, 64]);
      expect(w.layers[i]!.v_proj!.outFeatures).toBe(32); // 2 kv heads x head_dim 16
      const a = tensors.find((t) => t.name === `base_model.model.model.layers.${i}.self_attn.q_proj.lora_A.weight`)!;
      expect(q.a).toEqual(a.values);
    }
  });

  it('a config as PEFT 0.17 saves it, every field present at its default, loads', async () => {
    const saved = {
      alpha_pattern: {}, auto_mapping: null, base_model_name_or_path: 'golden/tiny-mistral', bias: 'none', corda_config: null,
      eva_config: null, exclude_modules: null, fan_in_fan_out: false, inference_mode: true, init_lora_weights: true,
      layer_replication: null, layers_pattern: null, layers_to_transform: null, loftq_config: {}, lora_alpha: 16, lora_bias: false,
      lora_dropout: 0.05, megatron_config: null, megatron_core: 'megatron.core', modules_to_save: null, peft_type: 'LORA',
      qalora_group_size: 16, r: 8, rank_pattern: {}, revision: null, target_modules: ['v_proj', 'q_proj'], target_parameters: null,
      task_type: 'CAUSAL_LM', trainable_token_indices: null, use_dora: false, use_qalora: false, use_rslora: false,
    };
    const { dir } = await write({ config: saved, modules: qv(8) });
    const w = await loadLora(dir, config);
    expect(w.modules).toBe(4);
    expect(w.layers[0]!.q_proj!.scale).toBe(2);
  });

  it('rsLoRA scales by lora_alpha / sqrt(r)', async () => {
    const { dir } = await write({ config: { r: 16, lora_alpha: 8, use_rslora: true, target_modules: ['o_proj'] }, modules: allModules(config, 16, ['o_proj']) });
    expect((await loadLora(dir, config)).layers[1]!.o_proj!.scale).toBe(8 / 4);
  });

  it('rank_pattern and alpha_pattern give per-module r and alpha (first matching key, on the last dotted parts)', async () => {
    const { dir } = await write({
      config: {
        r: 8,
        lora_alpha: 16,
        target_modules: ['q_proj', 'down_proj'],
        rank_pattern: { 'model.layers.1.mlp.down_proj': 3, q_proj: 4 },
        alpha_pattern: { 'layers.0.self_attn.q_proj': 2 },
      },
      modules: [[0, 'q_proj', 4], [1, 'q_proj', 4], [0, 'down_proj', 8], [1, 'down_proj', 3]],
    });
    const w = await loadLora(dir, config);
    expect([w.layers[0]!.q_proj!.rank, w.layers[0]!.q_proj!.scale]).toEqual([4, 2 / 4]);
    expect([w.layers[1]!.q_proj!.rank, w.layers[1]!.q_proj!.scale]).toEqual([4, 16 / 4]);
    expect([w.layers[0]!.down_proj!.rank, w.layers[0]!.down_proj!.scale]).toEqual([8, 2]);
    expect([w.layers[1]!.down_proj!.rank, w.layers[1]!.down_proj!.scale]).toEqual([3, 16 / 3]);
  });

  it('target_modules as a regular expression over the whole module name (PEFT re.fullmatch)', async () => {
    const { dir } = await write({
      config: { r: 4, lora_alpha: 4, target_modules: String.raw`.*\.1\.self_attn\.(k|v)_proj` },
      modules: [[1, 'k_proj', 4], [1, 'v_proj', 4]],
    });
    const w = await loadLora(dir, config);
    expect(w.layers.map((l) => Object.keys(l).sort())).toEqual([[], ['k_proj', 'v_proj']]);
  });

  it('layers_to_transform limits the layers; "all-linear" takes every projection', async () => {
    const { dir } = await write({ config: { r: 2, lora_alpha: 4, target_modules: 'all-linear', layers_to_transform: [1] }, modules: allModules(config, 2).filter(([i]) => i === 1) });
    const w = await loadLora(dir, config);
    expect(Object.keys(w.layers[0]!)).toEqual([]);
    expect(Object.keys(w.layers[1]!).length).toBe(7);
  });

  it('f16 and bf16 weights widen exactly', async () => {
    const { dir, tensors } = await write({ config: { r: 4, lora_alpha: 8, target_modules: ['up_proj'] }, modules: allModules(config, 4, ['up_proj']), dtype: 'F16' });
    const b = (await loadLora(dir, config)).layers[0]!.up_proj!.b;
    const written = tensors.find((t) => t.name.endsWith('layers.0.mlp.up_proj.lora_B.weight'))!.values;
    expect(b).toEqual(Float32Array.from(written, (v) => f16ToF32(f32ToF16(v))));
    const bf = await write({ config: { r: 4, lora_alpha: 8, target_modules: ['gate_proj'] }, modules: allModules(config, 4, ['gate_proj']), dtype: 'BF16' });
    const g = (await loadLora(bf.dir, config)).layers[1]!.gate_proj!.a;
    const src = bf.tensors.find((t) => t.name.endsWith('layers.1.mlp.gate_proj.lora_A.weight'))!.values;
    for (let i = 0; i < g.length; i++) expect(Math.abs(g[i]! - src[i]!)).toBeLessThanOrEqual(Math.abs(src[i]!) * 2 ** -8);
  });
});

describe('loadLora refuses, naming the file and the tensor', () => {
  const base = { r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj'] };
  const refuse = async (spec: Omit<AdapterSpec, 'seed'>, message: RegExp) => {
    const { dir } = await write(spec);
    await expect(loadLora(dir, config)).rejects.toThrow(message);
  };
  const rename = (from: string, to: string) => (ts: AdapterTensor[]) => ts.map((t) => ({ ...t, name: t.name.replace(from, to) }));

  it('DoRA (use_dora, or a magnitude vector)', async () => {
    await refuse({ config: { ...base, use_dora: true }, modules: qv(4) }, /adapter_config\.json: DoRA/);
    await refuse(
      { config: base, modules: qv(4), edit: (ts) => [...ts, { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector', dtype: 'F32', shape: [64], values: new Float32Array(64).fill(1) }] },
      /adapter_model\.safetensors: tensor 'base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_magnitude_vector' is a DoRA magnitude vector/,
    );
  });

  it('a trained bias (bias "lora_only", or a bias tensor)', async () => {
    await refuse({ config: { ...base, bias: 'lora_only' }, modules: qv(4) }, /adapter_config\.json: bias: "lora_only"/);
    await refuse(
      { config: { ...base, bias: 'all' }, modules: qv(4), edit: (ts) => [...ts, { name: 'base_model.model.model.layers.1.self_attn.v_proj.lora_B.bias', dtype: 'F32', shape: [32], values: new Float32Array(32).fill(0.5) }] },
      /tensor 'base_model\.model\.model\.layers\.1\.self_attn\.v_proj\.lora_B\.bias' is a trained bias/,
    );
  });

  it('modules the model has not (a layer past the last, another architecture, lm_head)', async () => {
    await refuse({ config: base, modules: qv(4), edit: rename('layers.1.', 'layers.7.') }, /tensor 'base_model\.model\.model\.layers\.7\.self_attn\.q_proj\.lora_A\.weight' names module 'model\.layers\.7\.self_attn\.q_proj', which this model has not/);
    await refuse({ config: { ...base, target_modules: ['c_attn'] }, modules: qv(4), edit: rename('self_attn.q_proj', 'attn.c_attn') }, /names module 'model\.layers\.0\.attn\.c_attn', which this model has not/);
    await refuse(
      { config: { ...base, target_modules: ['lm_head'] }, modules: [], edit: () => [{ name: 'base_model.model.lm_head.lora_A.weight', dtype: 'F32', shape: [4, 64], values: new Float32Array(256).fill(0.1) }] },
      /tensor 'base_model\.model\.lm_head\.lora_A\.weight' adapts lm_head; only the decoder layers' projections/,
    );
  });

  it('shapes that do not match the base model or the rank', async () => {
    await refuse(
      { config: base, modules: qv(4), edit: (ts) => ts.map((t) => (t.name.endsWith('layers.0.self_attn.v_proj.lora_B.weight') ? { ...t, shape: [64, 4], values: new Float32Array(256).fill(0.1) } : t)) },
      /tensor 'base_model\.model\.model\.layers\.0\.self_attn\.v_proj\.lora_B\.weight' has shape \[64,4\], but expected \[32,4\]/,
    );
    await refuse({ config: { ...base, rank_pattern: { q_proj: 2 } }, modules: qv(4) }, /tensor 'base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight' has shape \[4,64\], but expected \[2,64\].*rank_pattern/);
  });

  it('fan_in_fan_out on Linear, and other features this engine does not run', async () => {
    await refuse({ config: { ...base, fan_in_fan_out: true }, modules: qv(4) }, /adapter_config\.json: fan_in_fan_out: true/);
    await refuse({ config: { ...base, modules_to_save: ['lm_head'] }, modules: qv(4) }, /adapter_config\.json: modules_to_save/);
    await refuse({ config: { ...base, peft_type: 'PREFIX_TUNING' }, modules: qv(4) }, /adapter_config\.json: peft_type is "PREFIX_TUNING"/);
    await refuse({ config: { ...base, r: 2.5 }, modules: qv(4) }, /adapter_config\.json: r must be a positive integer; got 2\.5/);
    await refuse({ config: { ...base, target_modules: '(q_proj' }, modules: qv(4) }, /adapter_config\.json: target_modules: "\(q_proj" is not a regular expression/);
  });

  it('tensors and target_modules that disagree', async () => {
    await refuse({ config: { ...base, target_modules: ['q_proj'] }, modules: qv(4) }, /tensor 'base_model\.model\.model\.layers\.0\.self_attn\.v_proj\.lora_A\.weight': module 'model\.layers\.0\.self_attn\.v_proj' is not selected by target_modules/);
    await refuse(
      { config: base, modules: qv(4), edit: (ts) => ts.filter((t) => !t.name.endsWith('layers.1.self_attn.q_proj.lora_B.weight')) },
      /module 'model\.layers\.1\.self_attn\.q_proj' is selected by target_modules .* but 'base_model\.model\.model\.layers\.1\.self_attn\.q_proj\.lora_B\.weight' is missing/,
    );
    await refuse({ config: base, modules: [], edit: () => [] }, /adapter_model\.safetensors: holds no LoRA tensors/);
    await refuse({ config: base, modules: qv(4), edit: rename('lora_A.weight', 'lora_A.default.weight') }, /is not a LoRA weight as PEFT saves them/);
    await refuse(
      { config: base, modules: qv(4), edit: (ts) => [...ts, { name: 'base_model.model.model.embed_tokens.weight', dtype: 'F32', shape: [2, 64], values: new Float32Array(128).fill(0.1) }] },
      /tensor 'base_model\.model\.model\.embed_tokens\.weight' is a whole trained copy of a base weight/,
    );
  });

  it('non-finite weights, missing files', async () => {
    await refuse(
      { config: base, modules: qv(4), edit: (ts) => ts.map((t, i) => (i === 2 ? { ...t, values: Float32Array.from(t.values, (v, j) => (j === 5 ? NaN : v)) } : t)) },
      /tensor 'base_model\.model\.model\.layers\.0\.self_attn\.v_proj\.lora_A\.weight' holds a non-finite value .* at element 5/,
    );
    const { dir } = await write({ config: base, modules: qv(4) });
    unlinkSync(join(dir, 'adapter_model.safetensors'));
    writeFileSync(join(dir, 'adapter_model.bin'), 'pickle');
    await expect(loadLora(dir, config)).rejects.toThrow(/adapter_model\.safetensors: not found; adapter_model\.bin \(a PyTorch pickle\) is not read/);
    unlinkSync(join(dir, 'adapter_config.json'));
    await expect(loadLora(dir, config)).rejects.toThrow(/adapter_config\.json: not found/);
    await expect(loadLora(join(root, 'nowhere'), config)).rejects.toThrow(/adapter folder .*nowhere does not exist/);
  });
});
