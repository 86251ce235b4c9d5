/**
 * Writes LoRA adapter folders in Hugging Face PEFT's layout, for tests: random A and B
 * (PEFT initialises B to zero; random B makes the adapter change the output), any
 * dtype, any subset of projections and ranks. Nothing is committed: tests write into
 * a temporary folder.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LAYER_TENSORS, type ModelConfig } from './config.ts';
import { writeSafetensors } from './safetensors.ts';
import type { LinearKey } from './lora.ts';
import { Rng } from '../util/rng.ts';
import { encodeFromF32 } from '../util/half.ts';
import { randomNormal } from '../util/testing.ts';

export interface AdapterTensor {
  name: string;
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
  values: Float32Array;
}

export interface AdapterSpec {
  seed: number;
  /** adapter_config.json as written (r, lora_alpha, target_modules, ...); peft_type and task_type are added. */
  config: Record<string, unknown>;
  /**
   * The projections that get lora_A / lora_B tensors: [layer, projection, rank]. The test
   * states them itself (what PEFT would wrap for `config`), so the loader's matching is
   * checked, not repeated.
   */
  modules: [number, LinearKey, number][];
  dtype?: 'F32' | 'F16' | 'BF16';
  /** Edits the tensor list before it is written (refusal tests). */
  edit?: (tensors: AdapterTensor[]) => AdapterTensor[];
}

/** Every projection of every layer at rank r: the modules of target_modules "all-linear". */
export function allModules(model: ModelConfig, r: number, keys: readonly LinearKey[] = LINEAR_KEYS): [number, LinearKey, number][] {
  const out: [number, LinearKey, number][] = [];
  for (let i = 0; i < model.num_hidden_layers; i++) for (const k of keys) out.push([i, k, r]);
  return out;
}

const LINEAR_KEYS = LAYER_TENSORS.filter((t) => t.kind === 'linear').map((t) => t.key as LinearKey);

/** Writes `dir`/adapter_config.json and `dir`/adapter_model.safetensors; returns the tensors written. */
export async function writePeftAdapter(dir: string, model: ModelConfig, spec: AdapterSpec): Promise<AdapterTensor[]> {
  mkdirSync(dir, { recursive: true });
  const rng = new Rng(spec.seed);
  const dtype = spec.dtype ?? 'F32';
  let tensors: AdapterTensor[] = [];
  for (const [layer, key, rank] of spec.modules) {
    const t = LAYER_TENSORS.find((x) => x.key === key)!;
    const [outF, inF] = t.shape(model) as [number, number];
    const prefix = `base_model.model.model.layers.${layer}.${t.path.replace(/\.weight$/, '')}`;
    // u = x A^T has unit scale for unit x; each update then has about 0.1 * scale standard deviation.
    tensors.push({ name: `${prefix}.lora_A.weight`, dtype, shape: [rank, inF], values: randomNormal(rng, rank * inF, 1 / Math.sqrt(inF)) });
    tensors.push({ name: `${prefix}.lora_B.weight`, dtype, shape: [outF, rank], values: randomNormal(rng, outF * rank, 0.1 / Math.sqrt(rank)) });
  }
  if (spec.edit) tensors = spec.edit(tensors);
  writeFileSync(
    join(dir, 'adapter_config.json'),
    JSON.stringify({ peft_type: 'LORA', task_type: 'CAUSAL_LM', base_model_name_or_path: 'golden/tiny-mistral', bias: 'none', ...spec.config }, null, 2),
  );
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, (s, i) =>
    encodeFromF32(tensors[i]!.values, s.dtype === 'F32' ? 'f32' : s.dtype === 'F16' ? 'f16' : 'bf16'),
  );
  return tensors;
}
