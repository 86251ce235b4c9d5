/**
 * GGUF model files for tests and benchmarks, written as llama.cpp's converter writes them
 * (architecture `llama`, q_proj/k_proj rows permuted for its RoPE, the OpenChat 3.5 vocabulary
 * as control/normal/byte pieces): from a Hugging Face folder (`ggufFromFolder`: the weights
 * exactly, in F32/F16/BF16, or quantized to Q8_0/Q4_0 with the project's q8/q4 rounding), or
 * random weights of any type (`syntheticGguf`: random valid blocks, for the formats no
 * quantizer here writes).
 */
import { expectedTensors, loadConfig, type ModelConfig } from './config.ts';
import { Checkpoint } from './safetensors.ts';
import { ggufNames, ggufRowOf } from './gguf_model.ts';
import { gv, writeGguf, type GgufTensorToWrite } from '../util/gguf_writer.ts';
import type { GgufValue } from '../util/gguf.ts';
import { openChat35GgufTokenizerMetadata } from '../tokenizer/gguf.ts';
import { GGML_TYPES, type GgmlType } from '../kernels/ggml/types.ts';
import { randomBlocks } from '../kernels/ggml/blocks.testing.ts';
import { decodeToF32 } from '../util/half.ts';
import { encodeRows } from './gguf_quantize.ts';
import { Rng } from '../util/rng.ts';

/** The metadata llama.cpp's converter writes for a model of `config` (architecture llama). */
export async function ggufModelMetadata(config: ModelConfig, opts: { slidingWindow?: boolean; name?: string } = {}): Promise<Array<[string, GgufValue]>> {
  const meta: Array<[string, GgufValue]> = [
    ['general.architecture', gv.string('llama')],
    ['general.name', gv.string(opts.name ?? 'test model')],
    ['llama.vocab_size', gv.u32(config.vocab_size)],
    ['llama.context_length', gv.u32(config.max_position_embeddings)],
    ['llama.embedding_length', gv.u32(config.hidden_size)],
    ['llama.block_count', gv.u32(config.num_hidden_layers)],
    ['llama.feed_forward_length', gv.u32(config.intermediate_size)],
    ['llama.rope.dimension_count', gv.u32(config.head_dim)],
    ['llama.attention.head_count', gv.u32(config.num_attention_heads)],
    ['llama.attention.head_count_kv', gv.u32(config.num_key_value_heads)],
    ['llama.attention.key_length', gv.u32(config.head_dim)],
    ['llama.attention.value_length', gv.u32(config.head_dim)],
    ['llama.attention.layer_norm_rms_epsilon', gv.f32(config.rms_norm_eps)],
    ['llama.rope.freq_base', gv.f32(config.rope_theta)],
  ];
  if (opts.slidingWindow && config.sliding_window !== null) meta.push(['llama.attention.sliding_window', gv.u32(config.sliding_window)]);
  // The checkpoint's own BOS/EOS over the vocabulary's defaults, as gguf-py's SpecialVocab takes them from config.json.
  const ids: Record<string, number | undefined> = { 'tokenizer.ggml.bos_token_id': config.bos_token_id ?? undefined, 'tokenizer.ggml.eos_token_id': config.eos_token_id[0] };
  const vocab = (await openChat35GgufTokenizerMetadata()).map(([k, v]): [string, GgufValue] => (ids[k] === undefined ? [k, v] : [k, gv.u32(ids[k]!)]));
  return [...meta, ...vocab];
}

/** HF rows of a weight in the file's order: file row f holds HF row r with ggufRowOf(r) == f. */
function fileOrder(rows: number, permutedHeads: number): number[] {
  const order = new Array<number>(rows);
  for (let r = 0; r < rows; r++) order[ggufRowOf(r, { rows, permutedHeads })] = r;
  return order;
}

/** Rows of `data` (rows of rowBytes) in the order `order` gives. */
function reorder(data: Uint8Array, rowBytes: number, order: number[]): Uint8Array {
  const out = new Uint8Array(data.byteLength);
  order.forEach((r, f) => out.set(data.subarray(r * rowBytes, (r + 1) * rowBytes), f * rowBytes));
  return out;
}

/**
 * Converts the float checkpoint in `dir` to a GGUF file at `out`: matrices in `type`, norms in
 * F32 (as llama.cpp's converter writes them), the rows of q_proj and k_proj permuted.
 */
export async function ggufFromFolder(dir: string, out: string, opts: { type?: GgmlType; slidingWindow?: boolean } = {}): Promise<void> {
  const config = await loadConfig(dir);
  const ckpt = await Checkpoint.open(dir);
  try {
    const names = ggufNames(config);
    const tensors: GgufTensorToWrite[] = [];
    for (const [name, shape] of expectedTensors(config)) {
      const { gguf, permutedHeads } = names.get(name)!;
      const rows = shape.length === 2 ? shape[0]! : 1;
      const cols = shape[shape.length - 1]!;
      const type: GgmlType = shape.length === 1 ? 'F32' : (opts.type ?? 'F16');
      tensors.push({
        name: gguf,
        type,
        dims: [...shape].reverse(),
        data: async () => {
          const values = decodeToF32(await ckpt.read(name), ckpt.float(name).dtype);
          const bytes = encodeRows(values, rows, cols, type);
          return permutedHeads ? reorder(bytes, bytes.byteLength / rows, fileOrder(rows, permutedHeads)) : bytes;
        },
      });
    }
    await writeGguf(out, { metadata: await ggufModelMetadata(config, opts), tensors });
  } finally {
    ckpt.close();
  }
}

/** The shape of a synthetic GGUF model; every size a multiple of 256 where K-quants must fit. */
export interface SyntheticGgufShape {
  /** Default 32002, OpenChat 3.5's (the file's vocabulary has that many pieces whatever this is). */
  vocab_size?: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  max_position_embeddings: number;
}

/**
 * The per-tensor types of the mixes llama-quantize writes: its Q4_K_M gives Q6_K to output and
 * to v_proj and down_proj of the layers `use_more_bits` picks (the first and last eighth, and
 * every third between), Q4_K to the rest; Q5_K_M the same over Q5_K.
 */
export const GGUF_MIXES = {
  Q4_K_M: { layers: 'Q4_K', embed: 'Q4_K', output: 'Q6_K', moreBits: 'Q6_K' },
  Q5_K_M: { layers: 'Q5_K', embed: 'Q5_K', output: 'Q6_K', moreBits: 'Q6_K' },
} as const satisfies Record<string, SyntheticGgufTypes>;

export interface SyntheticGgufTypes {
  layers: GgmlType;
  embed: GgmlType;
  /** null: no output tensor, tied to token_embd. */
  output: GgmlType | null;
  /** every down_proj */
  down?: GgmlType;
  /** v_proj and down_proj of the layers llama-quantize's _M mixes give more bits (usesMoreBits) */
  moreBits?: GgmlType;
}

/** llama.cpp's use_more_bits(i_layer, n_layers), the layers its _M mixes quantize with more bits. */
export function usesMoreBits(layer: number, layers: number): boolean {
  const eighth = Math.floor(layers / 8);
  return layer < eighth || layer >= Math.floor((7 * layers) / 8) || (layer - eighth) % 3 === 2;
}

/**
 * A GGUF model of random weights at `out`: the layers' matrices of `types.layers`, token_embd of
 * `types.embed`, output of `types.output` (absent: tied to token_embd), norms F32 near 1.
 * Random valid blocks: the format's decoding is what is tested, not a trained model's values.
 */
export async function syntheticGguf(
  out: string,
  shape: SyntheticGgufShape,
  types: SyntheticGgufTypes,
  seed: number,
): Promise<ModelConfig> {
  const rng = new Rng(seed);
  const config: ModelConfig = {
    architecture: 'LlamaForCausalLM',
    ...shape,
    vocab_size: shape.vocab_size ?? 32002,
    head_dim: shape.hidden_size / shape.num_attention_heads,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    sliding_window: null,
    tie_word_embeddings: types.output === null,
    bos_token_id: 1,
    eos_token_id: [32000],
    torch_dtype: null,
  };
  const names = ggufNames(config);
  const tensors: GgufTensorToWrite[] = [];
  const layerType = (name: string): GgmlType => {
    const layer = /^model\.layers\.(\d+)\.(self_attn\.v_proj|mlp\.down_proj)\./.exec(name);
    if (layer && types.moreBits && usesMoreBits(Number(layer[1]), config.num_hidden_layers)) return types.moreBits;
    return layer?.[2] === 'mlp.down_proj' && types.down ? types.down : types.layers;
  };
  for (const [name, dims] of expectedTensors(config)) {
    const { gguf } = names.get(name)!;
    const count = dims.reduce((a, b) => a * b, 1);
    if (dims.length === 1) {
      const values = new Float32Array(count);
      for (let k = 0; k < count; k++) values[k] = 1 + 0.1 * rng.normal();
      tensors.push({ name: gguf, type: 'F32', dims: [count], data: new Uint8Array(values.buffer) });
      continue;
    }
    const type = name === 'model.embed_tokens.weight' ? types.embed : name === 'lm_head.weight' ? types.output! : layerType(name);
    const { blockValues } = GGML_TYPES[type];
    // A trained model's weights are about 0.02; the embedding's larger rows keep the norms' inputs well away from zero.
    const scale = name === 'model.embed_tokens.weight' ? 0.5 : 1 / Math.sqrt(dims[1]!);
    const data = blockValues === 1 ? encodeRows(randomFloats(rng, count, scale), dims[0]!, dims[1]!, type) : randomBlocks(type, count / blockValues, rng, scale);
    tensors.push({ name: gguf, type, dims: [...dims].reverse(), data });
  }
  await writeGguf(out, { metadata: await ggufModelMetadata(config), tensors });
  return config;
}

function randomFloats(rng: Rng, n: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  for (let k = 0; k < n; k++) out[k] = rng.normal() * scale;
  return out;
}
