/**
 * A GGUF file as a model: its hyper-parameters from the metadata, its tensors under the Hugging
 * Face names the rest of the engine uses, and their rows in Hugging Face's order.
 *
 * llama.cpp's converter writes Mistral-family checkpoints as architecture `llama` and permutes
 * the rows of q_proj and k_proj for its interleaved ("GPT-J style" pairs 2i, 2i + 1) RoPE:
 * within each head of head_dim rows, HF row j * head_dim/2 + i is stored as row 2i + j
 * (j in {0, 1}, i < head_dim/2). The loaders undo it here, row by row, so `layer()` and its
 * rotate-half RoPE stay Hugging Face's. Whole rows move, so it works on quantized tensors too:
 * a row is whole blocks in every format.
 *
 * Sliding window: llama.cpp runs these files with full attention, and its converter writes no
 * window for Mistral 7B; a window comes from `{arch}.attention.sliding_window` when the file has
 * one, or from the user (--sliding-window).
 */
import { ConfigError, GLOBAL_TENSORS, expectedTensors, layerTensors, parseConfig, withSlidingWindow, type ModelConfig } from './config.ts';
import { GgufFile } from '../util/gguf.ts';
export { isGgufPath } from '../util/gguf.ts';
import { GGML_TYPES, ggmlBytes, ggmlTypeName, type GgmlType } from '../kernels/ggml/types.ts';
import { dequantize } from '../kernels/ggml/dequant.ref.ts';

/** What a user may set over the file's metadata. */
export interface GgufOverrides {
  /** Keys a query sees (Mistral's 4096); 0 or null: full attention, as llama.cpp runs the file. */
  slidingWindow?: number | null;
}

const ARCHITECTURES = ['llama', 'mistral'] as const;

/** The hyper-parameters of a GGUF file's model, validated as a config.json's are. */
export function ggufConfig(file: GgufFile, overrides: GgufOverrides = {}): ModelConfig {
  const where = file.path;
  const arch = file.getString('general.architecture');
  if (!(ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new ConfigError(where, `general.architecture is '${arch}'; this engine runs ${ARCHITECTURES.join(' and ')} (Mistral and Llama models)`);
  }
  const key = (k: string) => `${arch}.${k}`;
  const experts = file.optionalNumber(key('expert_count')) ?? 0;
  if (experts > 0) throw new ConfigError(where, `${key('expert_count')} is ${experts}: mixture-of-experts models (Mixtral) are not supported`);
  const scaling = file.optionalString(key('rope.scaling.type'));
  if (scaling !== undefined && scaling !== 'none') throw new ConfigError(where, `${key('rope.scaling.type')} is '${scaling}': only plain RoPE is supported`);

  const hidden = file.getNumber(key('embedding_length'));
  const heads = file.getNumber(key('attention.head_count'));
  const kvHeads = file.optionalNumber(key('attention.head_count_kv')) ?? heads;
  const headDim = file.optionalNumber(key('attention.key_length')) ?? hidden / heads;
  const valueDim = file.optionalNumber(key('attention.value_length')) ?? headDim;
  const ropeDims = file.optionalNumber(key('rope.dimension_count')) ?? headDim;
  if (valueDim !== headDim) throw new ConfigError(where, `${key('attention.value_length')} (${valueDim}) differs from the key length (${headDim}); not supported`);
  if (ropeDims !== headDim) throw new ConfigError(where, `${key('rope.dimension_count')} is ${ropeDims}, not head_dim ${headDim}: partial rotary embeddings are not supported`);

  const embd = file.tensor('token_embd.weight');
  const vocab = file.optionalNumber(key('vocab_size')) ?? embd.dims[1];
  const window = file.optionalNumber(key('attention.sliding_window'));
  const raw = {
    architectures: [window ? 'MistralForCausalLM' : 'LlamaForCausalLM'],
    vocab_size: vocab,
    hidden_size: hidden,
    intermediate_size: file.getNumber(key('feed_forward_length')),
    num_hidden_layers: file.getNumber(key('block_count')),
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
    rms_norm_eps: file.getNumber(key('attention.layer_norm_rms_epsilon')),
    rope_theta: file.optionalNumber(key('rope.freq_base')) ?? 10000,
    sliding_window: window || null,
    max_position_embeddings: file.getNumber(key('context_length')),
    tie_word_embeddings: !file.tensors.has('output.weight'),
    bos_token_id: file.optionalNumber('tokenizer.ggml.bos_token_id'),
    eos_token_id: file.optionalNumber('tokenizer.ggml.eos_token_id'),
    torch_dtype: null,
  };
  const config = parseConfig(raw, where);
  return overrides.slidingWindow === undefined ? config : withSlidingWindow(config, overrides.slidingWindow);
}

/** A weight as a GGUF file holds it: its tensor, and the heads to un-permute for RoPE (q_proj, k_proj). */
export interface GgufWeight {
  gguf: string;
  type: GgmlType;
  rows: number;
  cols: number;
  /** Heads of head_dim rows whose rows the converter permuted; 0 for none. */
  permutedHeads: number;
}

/** Each weight's GGUF name and the heads llama.cpp's converter permutes (q_proj, k_proj), by Hugging Face name: for the loaders and the writer. */
export function ggufNames(config: ModelConfig): Map<string, { gguf: string; permutedHeads: number }> {
  const names = new Map<string, { gguf: string; permutedHeads: number }>();
  for (let i = 0; i < config.num_hidden_layers; i++) {
    for (const t of layerTensors(config, i)) {
      const permutedHeads = t.key === 'q_proj' ? config.num_attention_heads : t.key === 'k_proj' ? config.num_key_value_heads : 0;
      names.set(t.name, { gguf: t.gguf, permutedHeads });
    }
  }
  for (const t of GLOBAL_TENSORS) names.set(t.name, { gguf: t.gguf, permutedHeads: 0 });
  return names;
}

/**
 * Every weight of `config` by its Hugging Face name, checked against the file: present, of the
 * shape the config implies, of a type this engine reads (one line naming the file, the tensor and
 * its type otherwise), and no tensor left over that the model would silently ignore.
 */
export function ggufWeights(file: GgufFile, config: ModelConfig): Map<string, GgufWeight> {
  const names = ggufNames(config);
  const out = new Map<string, GgufWeight>();
  const used = new Set<string>();
  for (const [name, shape] of expectedTensors(config)) {
    const { gguf, permutedHeads } = names.get(name)!;
    const info = file.tensor(gguf);
    used.add(gguf);
    // GGUF lists dims innermost first: [cols, rows] for a matrix.
    const dims = [...info.dims].reverse();
    if (dims.length !== shape.length || dims.some((d, k) => d !== shape[k])) {
      throw new ConfigError(file.path, `tensor ${gguf} has shape [${dims.join(', ')}], but the metadata implies [${shape.join(', ')}] (${name})`);
    }
    if (info.type === null) {
      throw new ConfigError(file.path, `tensor ${gguf} is ${ggmlTypeName(info.typeId)}, which this engine does not read (it reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the K-quants Q2_K..Q6_K)`);
    }
    const cols = shape[shape.length - 1]!;
    const rows = shape.length === 2 ? shape[0]! : 1;
    if (cols % GGML_TYPES[info.type].blockValues !== 0) throw new ConfigError(file.path, `tensor ${gguf}: ${cols} columns are not whole ${info.type} blocks`);
    out.set(name, { gguf, type: info.type, rows, cols, permutedHeads });
  }
  const extra = [...file.tensors.keys()].filter((n) => !used.has(n) && !IGNORED.has(n));
  if (extra.length > 0) {
    throw new ConfigError(file.path, `tensor(s) this engine would not use: ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', ...' : ''} (is it a ${config.architecture} model of this shape?)`);
  }
  return out;
}

/** Tensors some converters add that carry nothing the model computes differently (precomputed RoPE frequencies of plain RoPE). */
const IGNORED = new Set(['rope_freqs.weight']);

/**
 * The file row holding Hugging Face row `row` of a weight: the converter's permutation undone
 * (see the header). Its inverse is never needed: loaders walk HF rows.
 */
export function ggufRowOf(row: number, w: Pick<GgufWeight, 'rows' | 'permutedHeads'>): number {
  if (w.permutedHeads === 0) return row;
  const headDim = w.rows / w.permutedHeads;
  const half = headDim / 2;
  const h = Math.floor(row / headDim);
  const within = row % headDim;
  const j = Math.floor(within / half);
  const i = within % half;
  return h * headDim + 2 * i + j;
}

/** Bytes of one row of `w` as the file stores it. */
export function ggufRowBytes(w: Pick<GgufWeight, 'type' | 'cols'>): number {
  return ggmlBytes(w.type, w.cols);
}

/**
 * Rows `row0 .. row0 + n` of weight `w` (HF order) as the file stores them, concatenated into
 * `into` (at least n rows). One read either way: the permutation moves rows only within a head,
 * so the file rows of HF rows row0 .. row0 + n lie within the heads those rows touch, read at
 * once and put in HF order here (a read per row would be a range request per row in a tab).
 */
export async function readGgufRows(file: GgufFile, w: GgufWeight, row0: number, n: number, into: Uint8Array): Promise<Uint8Array> {
  const rowBytes = ggufRowBytes(w);
  if (into.byteLength < n * rowBytes) throw new RangeError(`readGgufRows: ${n} rows of ${w.gguf} need ${n * rowBytes} bytes, the buffer has ${into.byteLength}`);
  if (w.permutedHeads === 0) {
    await file.read(w.gguf, into.subarray(0, n * rowBytes), row0 * rowBytes);
    return into.subarray(0, n * rowBytes);
  }
  const headDim = w.rows / w.permutedHeads;
  const first = Math.floor(row0 / headDim) * headDim;
  const end = Math.min(w.rows, Math.ceil((row0 + n) / headDim) * headDim);
  const span = await file.read(w.gguf, new Uint8Array((end - first) * rowBytes), first * rowBytes);
  for (let r = 0; r < n; r++) {
    const at = (ggufRowOf(row0 + r, w) - first) * rowBytes;
    into.set(span.subarray(at, at + rowBytes), r * rowBytes);
  }
  return into.subarray(0, n * rowBytes);
}

/** A whole weight dequantized to f32 in HF row order: the CPU reference model's view of the file. */
export async function dequantizeGgufWeight(file: GgufFile, w: GgufWeight): Promise<Float32Array> {
  const rowBytes = ggufRowBytes(w);
  const raw = await readGgufRows(file, w, 0, w.rows, new Uint8Array(w.rows * rowBytes));
  const out = dequantize(w.type, raw, w.rows * w.cols);
  for (let k = 0; k < out.length; k++) {
    if (!Number.isFinite(out[k]!)) throw new ConfigError(file.path, `tensor ${w.gguf} holds a non-finite weight at row ${Math.floor(k / w.cols)} (HF order), column ${k % w.cols}`);
  }
  return out;
}
