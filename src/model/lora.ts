/**
 * LoRA adapters in Hugging Face PEFT's folder layout: `adapter_config.json` and
 * `adapter_model.safetensors` (tensors `base_model.model.<module>.lora_A.weight`
 * [r, in_features] and `.lora_B.weight` [out_features, r]). An adapted projection
 * computes y = x W^T + scale * (x A^T) B^T with scale = lora_alpha / r (or
 * lora_alpha / sqrt(r) with rsLoRA), r and lora_alpha per module from
 * rank_pattern / alpha_pattern.
 *
 * Which modules an adapter adapts follows PEFT's own rules, so a folder PEFT wrote
 * loads as PEFT would load it: `target_modules` as a list (a module's name, or its
 * last dotted parts) or as a regular expression over the whole module name,
 * `layers_to_transform` / `layers_pattern`, `exclude_modules`. What this engine does not
 * run (DoRA, trained biases, embedding or lm_head adapters, modules_to_save, ...) is
 * refused with one line naming the file and, where there is one, the tensor.
 *
 * The weights are widened to f32 on the host (adapters are small: rank 16 on every
 * projection of a 7B model is 42M values); the device model keeps them beside the base
 * weights (model.ts), the CPU model merges them into W (cpu.ts).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import type { Gpu } from '../gpu/device.ts';
import { uploadF32 } from '../gpu/buffers.ts';
import type { LoraMatrices } from '../kernels/lora/index.ts';
import { decodeToF32 } from '../util/half.ts';
import { LAYER_TENSORS, type ModelConfig } from './config.ts';
import { CheckpointError, insideFolder } from './files.ts';
import { Checkpoint } from './safetensors.ts';
import { checkFinite } from './weights.ts';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';

type Linear = Extract<(typeof LAYER_TENSORS)[number], { kind: 'linear' }>;
/** The projections of a decoder layer an adapter may adapt: q_proj ... down_proj. */
export type LinearKey = Linear['key'];
const LINEAR: readonly Linear[] = LAYER_TENSORS.filter((t): t is Linear => t.kind === 'linear');

/** PEFT's default target_modules for Mistral and Llama, used when the config gives none. */
const DEFAULT_TARGETS = ['q_proj', 'v_proj'];

/** The parts of adapter_config.json that decide what is adapted and how much. */
export interface LoraConfig {
  r: number;
  lora_alpha: number;
  use_rslora: boolean;
  /** A list of names (a module's name or its last dotted parts), or one regular expression for the whole name. */
  target_modules: string[] | string;
  exclude_modules: string[] | string | null;
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
  layers_to_transform: number[] | null;
  layers_pattern: string[] | null;
}

/** One adapted projection, on the host: lora_A [rank, inFeatures], lora_B [outFeatures, rank], f32. */
export interface LoraModule {
  a: Float32Array;
  b: Float32Array;
  rank: number;
  scale: number;
  inFeatures: number;
  outFeatures: number;
}

/** A loaded adapter, on the host. */
export interface LoraWeights {
  /** The name requests use (serve --lora NAME=DIR), or the folder's name. */
  name: string;
  dir: string;
  config: LoraConfig;
  /** Per decoder layer, the adapted projections. */
  layers: Partial<Record<LinearKey, LoraModule>>[];
  /** Adapted projections in all layers. */
  modules: number;
  maxRank: number;
}

type Json = Record<string, unknown>;

/** Keys of adapter_config.json whose feature this engine does not run, with why, when they hold a true-ish value. */
const REFUSED: Record<string, string> = {
  use_dora: 'DoRA (weight-decomposed LoRA, use_dora: true) is not supported; merge it into the weights with PEFT, or train a plain LoRA',
  fan_in_fan_out: 'fan_in_fan_out: true is for GPT-2 style Conv1D layers; Mistral and Llama have nn.Linear projections, for which PEFT itself saves fan_in_fan_out: false',
  lora_bias: 'lora_bias: true (a trained bias on lora_B) is not supported',
  modules_to_save: 'modules_to_save (fully trained copies of whole modules) is not supported; only low-rank updates are',
  layer_replication: 'layer_replication is not supported',
  target_parameters: 'target_parameters (LoRA on parameters rather than modules) is not supported',
  megatron_config: 'megatron_config is not supported',
  trainable_token_indices: 'trainable_token_indices (trained rows of the embedding) is not supported',
  use_qalora: 'use_qalora (QA-LoRA, for quantized base weights) is not supported',
  alora_invocation_tokens: 'alora_invocation_tokens (activated LoRA, which applies only after the invocation tokens) is not supported',
  arrow_config: 'arrow_config (Arrow routing between adapters) is not supported',
};

function isStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === 'string');
}

/** A Python-style regular expression as JavaScript runs it, anchored as re.fullmatch. */
function fullMatch(pattern: string, where: string): RegExp {
  try {
    return new RegExp(`^(?:${pattern})$`);
  } catch (e) {
    throw new CheckpointError(`${where}: ${JSON.stringify(pattern)} is not a regular expression this engine can read (${(e as Error).message})`);
  }
}

/** Validates a parsed adapter_config.json; `file` names it in errors. */
export function parseLoraConfig(raw: Json, file: string): LoraConfig {
  const bad = (msg: string): never => {
    throw new CheckpointError(`${file}: ${msg}`);
  };
  const peftType = raw.peft_type ?? 'LORA';
  if (peftType !== 'LORA') bad(`peft_type is ${JSON.stringify(peftType)}; only LoRA adapters ("LORA") are supported`);
  for (const [key, why] of Object.entries(REFUSED)) {
    const v = raw[key];
    if (v !== undefined && v !== null && v !== false && !(Array.isArray(v) && v.length === 0)) bad(why);
  }
  const bias = raw.bias ?? 'none';
  if (bias === 'lora_only') bad('bias: "lora_only" trains a bias beside the adapter, which is not supported; train with bias: "none"');
  if (bias !== 'none' && bias !== 'all') bad(`bias must be "none" (or "all"); got ${JSON.stringify(bias)}`);

  const r = raw.r ?? 8;
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) bad(`r must be a positive integer; got ${JSON.stringify(raw.r)}`);
  const alpha = raw.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) bad(`lora_alpha must be a number; got ${JSON.stringify(raw.lora_alpha)}`);
  const rslora = raw.use_rslora ?? false;
  if (typeof rslora !== 'boolean') bad(`use_rslora must be true or false; got ${JSON.stringify(rslora)}`);

  const targets = raw.target_modules ?? DEFAULT_TARGETS;
  if (typeof targets === 'string') fullMatch(targets, `${file}: target_modules`);
  else if (!isStringList(targets)) bad(`target_modules must be a list of module names or one regular expression; got ${JSON.stringify(targets)}`);
  const exclude = raw.exclude_modules ?? null;
  if (typeof exclude === 'string') fullMatch(exclude, `${file}: exclude_modules`);
  else if (exclude !== null && !isStringList(exclude)) bad(`exclude_modules must be a list of module names or one regular expression; got ${JSON.stringify(exclude)}`);

  const pattern = (key: 'rank_pattern' | 'alpha_pattern', integer: boolean): Record<string, number> => {
    const v = raw[key] ?? {};
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad(`${key} must be an object of {pattern: value}; got ${JSON.stringify(v)}`);
    for (const [k, n] of Object.entries(v)) {
      const ok = typeof n === 'number' && (integer ? Number.isInteger(n) && n >= 1 : Number.isFinite(n));
      if (!ok) bad(`${key}[${JSON.stringify(k)}] must be ${integer ? 'a positive integer' : 'a number'}; got ${JSON.stringify(n)}`);
      fullMatch(k, `${file}: ${key} key`);
    }
    return v as Record<string, number>;
  };

  let layers: number[] | null = null;
  const lt = raw.layers_to_transform;
  if (typeof lt === 'number') layers = [lt];
  else if (Array.isArray(lt)) layers = lt as number[];
  else if (lt !== undefined && lt !== null) bad(`layers_to_transform must be a layer index or a list of them; got ${JSON.stringify(lt)}`);
  if (layers && !layers.every((i) => Number.isInteger(i) && i >= 0)) bad(`layers_to_transform must hold layer indices; got ${JSON.stringify(lt)}`);
  const lp = raw.layers_pattern;
  let layersPattern: string[] | null = null;
  if (typeof lp === 'string') layersPattern = [lp];
  else if (isStringList(lp)) layersPattern = lp.length ? lp : null;
  else if (lp !== undefined && lp !== null) bad(`layers_pattern must be a string or a list of them; got ${JSON.stringify(lp)}`);

  return {
    r: r as number,
    lora_alpha: alpha as number,
    use_rslora: rslora as boolean,
    target_modules: targets as string[] | string,
    exclude_modules: exclude as string[] | string | null,
    rank_pattern: pattern('rank_pattern', true),
    alpha_pattern: pattern('alpha_pattern', false),
    layers_to_transform: layers,
    layers_pattern: layersPattern,
  };
}

/** PEFT's name rule for a list: the whole module name, or its last dotted parts. */
function namedIn(list: string[], key: string): boolean {
  return list.some((t) => key === t || key.endsWith(`.${t}`));
}

/** The first key of a rank_pattern / alpha_pattern that matches the module `key` (PEFT's get_pattern_key). */
function patternValue(pattern: Record<string, number>, key: string): number | undefined {
  for (const [k, v] of Object.entries(pattern)) {
    if (new RegExp(`^(?:.*\\.)?(?:${k})$`).test(key)) return v;
  }
  return undefined;
}

/** Whether PEFT would wrap the module `key` (e.g. "model.layers.3.self_attn.q_proj") with this config. */
export function isTargeted(c: LoraConfig, key: string): boolean {
  const t = c.target_modules;
  let found = typeof t === 'string' ? (t === 'all-linear' ? key !== 'lm_head' : fullMatch(t, 'target_modules').test(key)) : namedIn(t, key);
  const ex = c.exclude_modules;
  if (found && ex !== null) found = !(typeof ex === 'string' ? fullMatch(ex, 'exclude_modules').test(key) : namedIn(ex, key));
  if (found && c.layers_to_transform) {
    const patterns = c.layers_pattern?.map((p) => new RegExp(`^.*\\.(?:${p})\\.(\\d+)\\.`)) ?? [/^.*\.[^.]*\.(\d+)\./];
    const index = patterns.map((re) => re.exec(key)).find((m) => m !== null);
    found = index !== undefined && c.layers_to_transform.includes(Number(index[1]));
  }
  return found;
}

/** A module's rank and scale from the config: r / lora_alpha, or the patterns' values for it. */
export function rankAndScale(c: LoraConfig, key: string): { rank: number; scale: number } {
  const rank = patternValue(c.rank_pattern, key) ?? c.r;
  const alpha = patternValue(c.alpha_pattern, key) ?? c.lora_alpha;
  return { rank, scale: c.use_rslora ? alpha / Math.sqrt(rank) : alpha / rank };
}

/** The module name (PEFT's key) of projection `t` of layer `i`: "model.layers.{i}.self_attn.q_proj". */
function moduleName(i: number, t: Linear): string {
  return `model.layers.${i}.${t.path.replace(/\.weight$/, '')}`;
}

const TENSOR = /^base_model\.model\.(.+)\.(lora_A|lora_B)\.weight$/;

/** Says what a tensor that is not a plain lora_A / lora_B weight is, and why it is refused. */
function refuseTensor(file: string, name: string): never {
  const where = `${file}: tensor '${name}'`;
  if (/lora_magnitude_vector/.test(name)) throw new CheckpointError(`${where} is a DoRA magnitude vector; DoRA is not supported`);
  if (/lora_embedding_[AB]/.test(name)) throw new CheckpointError(`${where} adapts an embedding; only the decoder layers' projections can carry adapters`);
  if (/\.bias$/.test(name)) throw new CheckpointError(`${where} is a trained bias, which is not supported (train with bias: "none")`);
  if (/(embed_tokens|lm_head)(\.modules_to_save\.default)?\.weight$/.test(name)) {
    throw new CheckpointError(
      `${where} is a whole trained copy of a base weight (PEFT saves one for modules_to_save, or with save_embedding_layers after the vocabulary was resized), which is not supported`,
    );
  }
  throw new CheckpointError(`${where} is not a LoRA weight as PEFT saves them (base_model.model.<module>.lora_A.weight / lora_B.weight)`);
}

/**
 * Reads and validates the PEFT adapter folder `dir` against the base model's config.
 * Every problem is one CheckpointError naming the file and, where there is one, the tensor.
 */
export async function loadLora(dir: string, model: ModelConfig, name = basename(resolve(dir))): Promise<LoraWeights> {
  if (!existsSync(dir)) throw new CheckpointError(`adapter folder ${dir} does not exist`);
  if (!statSync(dir).isDirectory()) throw new CheckpointError(`${dir}: an adapter is a folder holding ${ADAPTER_CONFIG} and ${ADAPTER_WEIGHTS}`);
  const configFile = insideFolder(dir, ADAPTER_CONFIG, `adapter ${dir}`);
  if (!existsSync(configFile)) throw new CheckpointError(`${configFile}: not found; a PEFT adapter folder holds ${ADAPTER_CONFIG} and ${ADAPTER_WEIGHTS}`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(configFile, 'utf8'));
  } catch (e) {
    throw new CheckpointError(`${configFile}: cannot be read as JSON (${(e as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new CheckpointError(`${configFile}: must contain a JSON object`);
  const config = parseLoraConfig(raw as Json, configFile);

  const weightsFile = insideFolder(dir, ADAPTER_WEIGHTS, `adapter ${dir}`);
  if (!existsSync(weightsFile)) {
    const bin = existsSync(insideFolder(dir, 'adapter_model.bin', `adapter ${dir}`));
    throw new CheckpointError(
      `${weightsFile}: not found` + (bin ? '; adapter_model.bin (a PyTorch pickle) is not read: save the adapter with safe_serialization=True' : ''),
    );
  }

  // Every projection of the model, by PEFT's module name.
  const modules = new Map<string, { layer: number; t: Linear; outFeatures: number; inFeatures: number }>();
  for (let i = 0; i < model.num_hidden_layers; i++) {
    for (const t of LINEAR) {
      const [outFeatures, inFeatures] = t.shape(model) as [number, number];
      modules.set(moduleName(i, t), { layer: i, t, outFeatures, inFeatures });
    }
  }
  const ckpt = await Checkpoint.openFile(weightsFile);
  try {
    const found = new Map<string, { A?: string; B?: string }>();
    for (const tensor of ckpt.tensors.keys()) {
      const m = TENSOR.exec(tensor);
      if (!m) refuseTensor(weightsFile, tensor);
      const [, key, which] = m as unknown as [string, string, 'lora_A' | 'lora_B'];
      const where = `${weightsFile}: tensor '${tensor}'`;
      if (!modules.has(key)) {
        if (key === 'lm_head' || key === 'model.embed_tokens') {
          throw new CheckpointError(`${where} adapts ${key}; only the decoder layers' projections (${LINEAR.map((t) => t.key).join(', ')}) can carry adapters`);
        }
        throw new CheckpointError(
          `${where} names module '${key}', which this model has not (${model.architecture}, ${model.num_hidden_layers} layers, ` +
            `projections ${LINEAR.map((t) => t.key).join(', ')}): is the adapter for another base model?`,
        );
      }
      if (!isTargeted(config, key)) {
        throw new CheckpointError(`${where}: module '${key}' is not selected by target_modules (or layers_to_transform) in ${configFile}, so PEFT would not load it`);
      }
      const entry = found.get(key) ?? {};
      entry[which === 'lora_A' ? 'A' : 'B'] = tensor;
      found.set(key, entry);
    }
    if (found.size === 0) throw new CheckpointError(`${weightsFile}: holds no LoRA tensors`);

    const layers: Partial<Record<LinearKey, LoraModule>>[] = Array.from({ length: model.num_hidden_layers }, () => ({}));
    let maxRank = 0;
    for (const [key, mod] of modules) {
      if (!isTargeted(config, key)) continue;
      const pair = found.get(key);
      const prefix = `base_model.model.${key}`;
      if (!pair?.A || !pair.B) {
        throw new CheckpointError(
          `${weightsFile}: module '${key}' is selected by target_modules in ${configFile}, but '${prefix}.${pair?.A ? 'lora_B' : 'lora_A'}.weight' is missing`,
        );
      }
      const { rank, scale } = rankAndScale(config, key);
      const read = async (tensor: string, shape: [number, number], what: string): Promise<Float32Array> => {
        const e = ckpt.float(tensor);
        if (e.shape.length !== 2 || e.shape[0] !== shape[0] || e.shape[1] !== shape[1]) {
          throw new CheckpointError(
            `${weightsFile}: tensor '${tensor}' has shape [${e.shape}], but expected [${shape}]: ${what} ` +
              `(rank ${rank} from ${configFile}'s ${patternValue(config.rank_pattern, key) !== undefined ? 'rank_pattern' : 'r'}; ` +
              `the base model's ${mod.t.key} is [${mod.outFeatures}, ${mod.inFeatures}])`,
          );
        }
        const bytes = await ckpt.read(tensor);
        checkFinite(bytes, e.dtype, weightsFile, tensor);
        return decodeToF32(bytes, e.dtype);
      };
      const a = await read(pair.A, [rank, mod.inFeatures], 'lora_A is [rank, in_features]');
      const b = await read(pair.B, [mod.outFeatures, rank], 'lora_B is [out_features, rank]');
      layers[mod.layer]![mod.t.key] = { a, b, rank, scale, inFeatures: mod.inFeatures, outFeatures: mod.outFeatures };
      maxRank = Math.max(maxRank, rank);
    }
    return { name, dir: resolve(dir), config, layers, modules: found.size, maxRank };
  } finally {
    ckpt.close();
  }
}

/** An adapter on the device, next to the base model it was loaded for. */
export class DeviceLora {
  private constructor(
    readonly name: string,
    readonly dir: string,
    /** Per decoder layer, the adapted projections. */
    readonly layers: Partial<Record<LinearKey, LoraMatrices>>[],
    readonly maxRank: number,
    /** Whether some layer adapts gate_proj or up_proj (the MLP then runs unfused). */
    readonly adaptsMlpInput: boolean,
    readonly bytes: number,
  ) {}

  static upload(gpu: Gpu, w: LoraWeights): DeviceLora {
    const binding = gpu.report.limits.maxStorageBufferBindingSize;
    let bytes = 0;
    let mlp = false;
    const layers = w.layers.map((layer, i) => {
      const out: Partial<Record<LinearKey, LoraMatrices>> = {};
      for (const [key, m] of Object.entries(layer) as [LinearKey, LoraModule][]) {
        for (const [what, values] of [['lora_A', m.a], ['lora_B', m.b]] as const) {
          if (values.byteLength > binding) {
            throw new CheckpointError(`${w.dir}: layer ${i} ${key}.${what} (${values.byteLength} bytes as f32) exceeds this device's binding limit ${binding}: the rank is too large`);
          }
        }
        const label = `lora ${w.name} layers.${i}.${key}`;
        out[key] = { a: uploadF32(gpu, m.a, `${label}.lora_A`), b: uploadF32(gpu, m.b, `${label}.lora_B`), rank: m.rank, inFeatures: m.inFeatures, outFeatures: m.outFeatures, scale: m.scale };
        bytes += m.a.byteLength + m.b.byteLength;
        if (key === 'gate_proj' || key === 'up_proj') mlp = true;
      }
      return out;
    });
    return new DeviceLora(w.name, w.dir, layers, w.maxRank, mlp, bytes);
  }

  destroy(): void {
    for (const layer of this.layers) {
      for (const m of Object.values(layer)) {
        m.a.destroy();
        m.b.destroy();
      }
    }
  }
}
