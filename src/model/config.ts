/**
 * The model's hyper-parameters, parsed once from a Hugging Face `config.json`
 * into one typed, validated object. Field names are Hugging Face's, so this
 * reads next to `MistralConfig` in transformers.
 */
import { join } from 'node:path';
import { diskFiles, type ModelSource } from '../util/files.ts';
import { ggufConfig, isGgufPath, type GgufOverrides } from './gguf_model.ts';
import { GgufFile } from '../util/gguf.ts';

export type Architecture = 'MistralForCausalLM' | 'LlamaForCausalLM';

export interface ModelConfig {
  architecture: Architecture;
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  rms_norm_eps: number;
  rope_theta: number;
  /** Keys a query sees, its own included; null for no window (Llama). */
  sliding_window: number | null;
  max_position_embeddings: number;
  tie_word_embeddings: boolean;
  bos_token_id: number | null;
  /** HF allows one id or a list. */
  eos_token_id: number[];
  torch_dtype: string | null;
}

export class ConfigError extends Error {
  constructor(source: string, message: string) {
    super(`${source}: ${message}`);
    this.name = 'ConfigError';
  }
}

type Json = Record<string, unknown>;

function positiveInt(raw: Json, key: string, source: string): number {
  const v = raw[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
    throw new ConfigError(source, `"${key}" must be a positive integer; got ${JSON.stringify(v)}`);
  }
  return v;
}

function positiveNumber(raw: Json, key: string, source: string, fallback?: number): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) {
    throw new ConfigError(source, `"${key}" must be a positive number; got ${JSON.stringify(raw[key])}`);
  }
  return v;
}

function optionalTokenId(raw: Json, key: string, source: string): number[] {
  const v = raw[key];
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const id of list) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw new ConfigError(source, `"${key}" must be a token id or a list of them; got ${JSON.stringify(v)}`);
    }
  }
  return list as number[];
}

/** Validates a parsed config.json. `source` names the file in error messages. */
export function parseConfig(raw: Json, source = 'config.json'): ModelConfig {
  const archs = raw.architectures;
  const arch = Array.isArray(archs) ? archs[0] : undefined;
  const modelType = raw.model_type;
  let architecture: Architecture;
  if (arch === 'MistralForCausalLM' || (arch === undefined && modelType === 'mistral')) architecture = 'MistralForCausalLM';
  else if (arch === 'LlamaForCausalLM' || (arch === undefined && modelType === 'llama')) architecture = 'LlamaForCausalLM';
  else {
    throw new ConfigError(
      source,
      `unsupported architecture ${JSON.stringify(arch ?? modelType)}; this engine runs MistralForCausalLM and LlamaForCausalLM`,
    );
  }

  const hidden_size = positiveInt(raw, 'hidden_size', source);
  const num_attention_heads = positiveInt(raw, 'num_attention_heads', source);
  const num_key_value_heads = raw.num_key_value_heads === undefined ? num_attention_heads : positiveInt(raw, 'num_key_value_heads', source);
  const head_dim = raw.head_dim === undefined || raw.head_dim === null ? hidden_size / num_attention_heads : positiveInt(raw, 'head_dim', source);

  if (!Number.isInteger(head_dim)) {
    throw new ConfigError(source, `hidden_size ${hidden_size} is not divisible by num_attention_heads ${num_attention_heads}, and no head_dim is given`);
  }
  if (head_dim % 2 !== 0) throw new ConfigError(source, `head_dim must be even for rotary embeddings; got ${head_dim}`);
  if (num_attention_heads % num_key_value_heads !== 0) {
    throw new ConfigError(source, `num_attention_heads (${num_attention_heads}) must be a multiple of num_key_value_heads (${num_key_value_heads})`);
  }
  const act = raw.hidden_act ?? 'silu';
  if (act !== 'silu') throw new ConfigError(source, `hidden_act ${JSON.stringify(act)} is not supported (only "silu")`);
  if (raw.attention_bias === true || raw.mlp_bias === true) {
    throw new ConfigError(source, 'attention_bias / mlp_bias are not supported (Mistral and Llama have none)');
  }
  const scaling = raw.rope_scaling;
  if (scaling !== undefined && scaling !== null) {
    throw new ConfigError(source, `rope_scaling ${JSON.stringify(scaling)} is not supported; only plain RoPE with rope_theta`);
  }

  let sliding_window: number | null = null;
  if (architecture === 'MistralForCausalLM' && raw.sliding_window !== undefined && raw.sliding_window !== null) {
    sliding_window = positiveInt(raw, 'sliding_window', source);
  }
  if (architecture === 'LlamaForCausalLM' && raw.sliding_window) {
    throw new ConfigError(source, 'LlamaForCausalLM has no sliding window; remove "sliding_window" or use MistralForCausalLM');
  }
  const max_position_embeddings = positiveInt(raw, 'max_position_embeddings', source);
  if (sliding_window !== null && sliding_window >= max_position_embeddings) sliding_window = null; // a window as long as the context is no window

  const config: ModelConfig = {
    architecture,
    vocab_size: positiveInt(raw, 'vocab_size', source),
    hidden_size,
    intermediate_size: positiveInt(raw, 'intermediate_size', source),
    num_hidden_layers: positiveInt(raw, 'num_hidden_layers', source),
    num_attention_heads,
    num_key_value_heads,
    head_dim,
    rms_norm_eps: positiveNumber(raw, 'rms_norm_eps', source, 1e-6),
    rope_theta: positiveNumber(raw, 'rope_theta', source, 10000),
    sliding_window,
    max_position_embeddings,
    tie_word_embeddings: raw.tie_word_embeddings === true,
    bos_token_id: optionalTokenId(raw, 'bos_token_id', source)[0] ?? null,
    eos_token_id: optionalTokenId(raw, 'eos_token_id', source),
    torch_dtype: typeof raw.torch_dtype === 'string' ? raw.torch_dtype : null,
  };
  if (config.hidden_size % 2 !== 0 || config.intermediate_size % 2 !== 0) {
    throw new ConfigError(source, 'hidden_size and intermediate_size must be even (16-bit weights are read two per word)');
  }
  return config;
}

/**
 * Reads and validates `DIR/config.json` (from `files`: the disk unless given), or a GGUF file's
 * metadata when `dir` names one (gguf_model.ts); `overrides` over either.
 */
export async function loadConfig(dir: string, files: ModelSource = diskFiles, overrides: GgufOverrides = {}): Promise<ModelConfig> {
  if (isGgufPath(dir)) {
    const gguf = await GgufFile.open(dir, files);
    try {
      return ggufConfig(gguf, overrides);
    } finally {
      gguf.close();
    }
  }
  const file = join(dir, 'config.json');
  if (!(await files.exists(file))) {
    throw new ConfigError(file, 'not found. A model folder needs the Hugging Face config.json next to its *.safetensors files');
  }
  let text: string;
  try {
    text = await files.readText(file);
  } catch (e) {
    throw new ConfigError(file, `cannot be read (${(e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(file, `is not valid JSON (${(e as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(file, 'must contain a JSON object');
  const config = parseConfig(raw as Json, file);
  return overrides.slidingWindow === undefined ? config : withSlidingWindow(config, overrides.slidingWindow);
}

/** `config` with the window a user asked for (0 or null: full attention), as parseConfig would have read it. */
export function withSlidingWindow(config: ModelConfig, window: number | null): ModelConfig {
  const w = window && window < config.max_position_embeddings ? window : null;
  return { ...config, sliding_window: w, architecture: w === null ? config.architecture : 'MistralForCausalLM' };
}

/**
 * One decoder layer's weights: the one table the loaders (model.ts, cpu.ts), the
 * checkpoint check (weights.ts) and the synthetic checkpoints (bench/synthetic.ts)
 * are derived from. `path` is the module path under `model.layers.{i}.` in
 * Hugging Face's module tree; `shape` is PyTorch's: [out_features, in_features]
 * for a linear layer, [dim] for a norm. Listed in the order MistralDecoderLayer
 * registers its modules, which is the order of `state_dict()` and of HF's shards.
 * `gguf` is the tensor's name in a GGUF file, `blk.{i}.{gguf}.weight` (llama.cpp's converter).
 */
export const LAYER_TENSORS = [
  { key: 'q_proj', gguf: 'attn_q', path: 'self_attn.q_proj.weight', kind: 'linear', shape: (c: ModelConfig) => [c.num_attention_heads * c.head_dim, c.hidden_size] },
  { key: 'k_proj', gguf: 'attn_k', path: 'self_attn.k_proj.weight', kind: 'linear', shape: (c: ModelConfig) => [c.num_key_value_heads * c.head_dim, c.hidden_size] },
  { key: 'v_proj', gguf: 'attn_v', path: 'self_attn.v_proj.weight', kind: 'linear', shape: (c: ModelConfig) => [c.num_key_value_heads * c.head_dim, c.hidden_size] },
  { key: 'o_proj', gguf: 'attn_output', path: 'self_attn.o_proj.weight', kind: 'linear', shape: (c: ModelConfig) => [c.hidden_size, c.num_attention_heads * c.head_dim] },
  { key: 'gate_proj', gguf: 'ffn_gate', path: 'mlp.gate_proj.weight', kind: 'linear', shape: (c: ModelConfig) => [c.intermediate_size, c.hidden_size] },
  { key: 'up_proj', gguf: 'ffn_up', path: 'mlp.up_proj.weight', kind: 'linear', shape: (c: ModelConfig) => [c.intermediate_size, c.hidden_size] },
  { key: 'down_proj', gguf: 'ffn_down', path: 'mlp.down_proj.weight', kind: 'linear', shape: (c: ModelConfig) => [c.hidden_size, c.intermediate_size] },
  { key: 'input_layernorm', gguf: 'attn_norm', path: 'input_layernorm.weight', kind: 'norm', shape: (c: ModelConfig) => [c.hidden_size] },
  { key: 'post_attention_layernorm', gguf: 'ffn_norm', path: 'post_attention_layernorm.weight', kind: 'norm', shape: (c: ModelConfig) => [c.hidden_size] },
] as const;

type LayerTensor = (typeof LAYER_TENSORS)[number];

/** A decoder layer's weights as some loader holds them: `Norm` for the norms' vectors, `Linear` for the projections. */
export type LayerWeights<Norm, Linear> = { [T in LayerTensor as T['key']]: T['kind'] extends 'norm' ? Norm : Linear };

/** Layer `i`'s tensors: the key in LayerWeights, the checkpoint's name, the kind and the shape. */
export function layerTensors(c: ModelConfig, i: number): { key: LayerTensor['key']; kind: LayerTensor['kind']; name: string; gguf: string; shape: number[] }[] {
  return LAYER_TENSORS.map((t) => ({ key: t.key, name: `model.layers.${i}.${t.path}`, gguf: `blk.${i}.${t.gguf}.weight`, kind: t.kind, shape: t.shape(c) }));
}

/** The model's tensors outside the layers: the Hugging Face name and the GGUF one. */
export const GLOBAL_TENSORS = [
  { name: 'model.embed_tokens.weight', gguf: 'token_embd.weight' },
  { name: 'model.norm.weight', gguf: 'output_norm.weight' },
  { name: 'lm_head.weight', gguf: 'output.weight' },
] as const;

/** The tensor names and shapes a checkpoint of this config must hold, in HF state_dict naming and order. */
export function expectedTensors(c: ModelConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  m.set('model.embed_tokens.weight', [c.vocab_size, c.hidden_size]);
  for (let i = 0; i < c.num_hidden_layers; i++) {
    for (const t of layerTensors(c, i)) m.set(t.name, t.shape);
  }
  m.set('model.norm.weight', [c.hidden_size]);
  if (!c.tie_word_embeddings) m.set('lm_head.weight', [c.vocab_size, c.hidden_size]);
  return m;
}

/**
 * The context (prompt + output, in tokens) to allocate: `requested`, or the
 * model's max_position_embeddings. More than the model was trained for is refused.
 */
export function contextLengthFor(config: ModelConfig, requested?: number): number {
  if (requested !== undefined && requested > config.max_position_embeddings) {
    throw new RangeError(
      `a context of ${requested} tokens was asked for, but this model's max_position_embeddings is ` +
        `${config.max_position_embeddings}: ask for at most that many`,
    );
  }
  return requested ?? config.max_position_embeddings;
}
