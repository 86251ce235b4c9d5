/**
 * The whole Mistral forward pass in plain TypeScript, built from the kernels'
 * CPU references. Slow, but every step is visible: this is the version to read
 * first, and the GPU forward pass (model.ts) is tested against the same goldens.
 */
import { layerTensors, loadConfig, type LayerWeights, type ModelConfig } from './config.ts';
import { Checkpoint } from './safetensors.ts';
import { dequantizeGgufWeight, ggufWeights, isGgufPath } from './gguf_model.ts';
import { GgufFile } from '../util/gguf.ts';
import { folderQuantization, quantizationFor, quantizedMatrices, scalesName, validateQuantized } from './quantized.ts';
import { checkFinite, validateCheckpoint } from './weights.ts';
import { decodeToF32 } from '../util/half.ts';
import { embeddingRef } from '../kernels/embedding.ref.ts';
import { rmsNormRef } from '../kernels/rmsnorm.ref.ts';
import { matmulRef } from '../kernels/matmul/matmul.ref.ts';
import { swigluRef } from '../kernels/matmul/swiglu.ref.ts';
import { dequantizeRows, quantizeRows } from '../kernels/quant.ref.ts';
import type { QuantFormat } from '../gpu/buffers.ts';
import { ropeRef } from '../kernels/rope.ref.ts';
import { attentionRef } from '../kernels/attention/attention.ref.ts';
import { mergeLoraRef } from '../kernels/lora/lora.ref.ts';
import type { LinearKey, LoraWeights } from './lora.ts';

/** Every weight widened to f32 on the host; projections row-major [out_features, in_features]. */
type CpuLayer = LayerWeights<Float32Array, Float32Array>;

function addInPlace(x: Float32Array, y: Float32Array): void {
  for (let i = 0; i < x.length; i++) x[i]! += y[i]!;
}

/**
 * `quantize`: the weights the GPU model's `quantize` option runs with (the seven projections
 * quantized, embed_tokens and lm_head to vocabFormats()), dequantized plainly; `embed` and
 * `lmHead` override those two formats, null keeping them as stored (to measure what
 * quantizing them costs).
 * `lora`: an adapter (src/model/lora.ts) merged into the weights, W + scale * B A:
 * the oracle the GPU's unmerged update is tested against.
 * `slidingWindow`: over the checkpoint's (ModelOptions.slidingWindow).
 */
export interface CpuLoadOptions {
  quantize?: QuantFormat;
  embed?: QuantFormat | null;
  lmHead?: QuantFormat | null;
  lora?: LoraWeights;
  slidingWindow?: number | null;
}

export class CpuModel {
  /** Keys and values of every position so far, per layer: [positions, num_key_value_heads, head_dim]. */
  private keys: Float32Array[] = [];
  private values: Float32Array[] = [];
  private length = 0;

  private constructor(
    readonly config: ModelConfig,
    private embed_tokens: Float32Array,
    private layers: CpuLayer[],
    private norm: Float32Array,
    private lm_head: Float32Array,
  ) {
    this.reset();
  }

  /** A folder's or a GGUF file's model, its weights widened to f32 (CpuLoadOptions). */
  static async load(dir: string, opts: CpuLoadOptions = {}): Promise<CpuModel> {
    if (isGgufPath(dir)) return CpuModel.loadGguf(dir, opts);
    const config = await loadConfig(dir, undefined, { slidingWindow: opts.slidingWindow });
    const stored = await folderQuantization(dir);
    if (stored && opts.quantize && opts.quantize !== stored.format) throw new Error(`${dir} is already quantized to ${stored.format}; load the original checkpoint to quantize it to ${opts.quantize}`);
    const ckpt = await Checkpoint.open(dir);
    try {
      const prequantized = stored ? validateQuantized(ckpt, config, stored) : new Map<string, QuantFormat>();
      if (!stored) validateCheckpoint(ckpt, config);
      const atLoad = new Map<string, QuantFormat>();
      if (opts.quantize) {
        const q = quantizationFor(config, opts.quantize);
        if (opts.embed !== undefined) q.embed_tokens = opts.embed;
        if (opts.lmHead !== undefined) q.lm_head = opts.lmHead;
        for (const [name, f] of quantizedMatrices(config, q)) atLoad.set(name, f);
      }
      const w = async (name: string) => {
        const f = prequantized.get(name);
        if (f) {
          const [rows, width] = ckpt.get(name).shape as [number, number];
          const cols = f === 'q8' ? width : width * 2;
          const s = await ckpt.read(scalesName(name));
          return dequantizeRows({ codes: await ckpt.read(name), scales: new Uint16Array(s.buffer, s.byteOffset, s.byteLength / 2) }, rows, cols, f);
        }
        const e = ckpt.float(name);
        const raw = await ckpt.read(name);
        checkFinite(raw, e.dtype, e.file, name);
        const values = decodeToF32(raw, e.dtype);
        const quantize = atLoad.get(name);
        if (!quantize) return values;
        const [rows, cols] = e.shape as [number, number];
        return dequantizeRows(quantizeRows(values, rows, cols, quantize, name), rows, cols, quantize);
      };
      return await CpuModel.build(config, w, opts.lora);
    } finally {
      ckpt.close();
    }
  }

  /**
   * A GGUF file's model (gguf_model.ts): every weight dequantized plainly (dequant.ref.ts) in
   * Hugging Face's row order; `quantize` as for a folder, for F16/F32/BF16 files.
   */
  private static async loadGguf(path: string, opts: CpuLoadOptions): Promise<CpuModel> {
    const config = await loadConfig(path, undefined, { slidingWindow: opts.slidingWindow });
    const file = await GgufFile.open(path);
    try {
      const weights = ggufWeights(file, config);
      const atLoad = opts.quantize ? quantizedMatrices(config, quantizationFor(config, opts.quantize)) : new Map<string, QuantFormat>();
      const w = async (name: string) => {
        const info = weights.get(name)!;
        const values = await dequantizeGgufWeight(file, info);
        const quantize = atLoad.get(name);
        return quantize ? dequantizeRows(quantizeRows(values, info.rows, info.cols, quantize, name), info.rows, info.cols, quantize) : values;
      };
      return await CpuModel.build(config, w, opts.lora);
    } finally {
      file.close();
    }
  }

  /** The model from `w`, each weight by its Hugging Face name, with `lora` merged. */
  private static async build(config: ModelConfig, w: (name: string) => Promise<Float32Array>, lora?: LoraWeights): Promise<CpuModel> {
    const layers: CpuLayer[] = [];
    for (let i = 0; i < config.num_hidden_layers; i++) {
      // Every key of LayerWeights comes from the table layerTensors() walks, so the object is complete.
      const entries: [string, Float32Array][] = [];
      for (const t of layerTensors(config, i)) entries.push([t.key, await w(t.name)]);
      layers.push(Object.fromEntries(entries) as CpuLayer);
      for (const [key, m] of Object.entries(lora?.layers[i] ?? {}) as [LinearKey, NonNullable<LoraWeights['layers'][number][LinearKey]>][]) {
        layers[i]![key] = mergeLoraRef(layers[i]![key], m.a, m.b, m.scale, m.rank);
      }
    }
    const embed = await w('model.embed_tokens.weight');
    const head = config.tie_word_embeddings ? embed : await w('lm_head.weight');
    return new CpuModel(config, embed, layers, await w('model.norm.weight'), head);
  }

  /** Forgets the conversation: the next forward starts at position 0. */
  reset(): void {
    this.keys = this.layers.map(() => new Float32Array(0));
    this.values = this.layers.map(() => new Float32Array(0));
    this.length = 0;
  }

  get position(): number {
    return this.length;
  }

  /**
   * Runs `ids` at positions position.. and returns their logits [ids.length, vocab_size].
   * `hiddenStates` [num_hidden_layers + 2, hidden_size], if given, receives the last
   * position's embedding, each layer's output and the final norm's output (for tests).
   */
  forward(ids: number[], opts: { hiddenStates?: Float32Array } = {}): Float32Array {
    const c = this.config;
    const T = ids.length;
    const H = c.hidden_size;
    const qDim = c.num_attention_heads * c.head_dim;
    const kvDim = c.num_key_value_heads * c.head_dim;
    const pos0 = this.length;
    const window = c.sliding_window ?? 0;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= c.vocab_size) throw new RangeError(`token id ${id} is outside the vocabulary [0, ${c.vocab_size})`);
    }

    const x = embeddingRef(this.embed_tokens, ids, H);
    const trace = (row: number, from: Float32Array) => opts.hiddenStates?.set(from.subarray((T - 1) * H, T * H), row * H);
    trace(0, x);
    this.layers.forEach((layer, i) => {
      // Self-attention block: x = x + o_proj(attention(rope(q), rope(k), v))
      const h = rmsNormRef(x, layer.input_layernorm, T, H, c.rms_norm_eps);
      const q = ropeRef(matmulRef(h, layer.q_proj, T, qDim, H), T, c.num_attention_heads, c.head_dim, pos0, c.rope_theta);
      const k = ropeRef(matmulRef(h, layer.k_proj, T, kvDim, H), T, c.num_key_value_heads, c.head_dim, pos0, c.rope_theta);
      const v = matmulRef(h, layer.v_proj, T, kvDim, H);
      this.keys[i] = concat(this.keys[i]!, k);
      this.values[i] = concat(this.values[i]!, v);
      const attn = attentionRef(q, this.keys[i]!, this.values[i]!, {
        tokens: T, pos0, heads: c.num_attention_heads, kvHeads: c.num_key_value_heads, headDim: c.head_dim, window,
      });
      addInPlace(x, matmulRef(attn, layer.o_proj, T, H, qDim));

      // MLP block: x = x + down_proj(silu(gate_proj(h)) * up_proj(h))
      const h2 = rmsNormRef(x, layer.post_attention_layernorm, T, H, c.rms_norm_eps);
      addInPlace(x, matmulRef(swigluRef(h2, layer.gate_proj, layer.up_proj, T, c.intermediate_size, H), layer.down_proj, T, H, c.intermediate_size));
      trace(i + 1, x);
    });
    this.length += T;
    const out = rmsNormRef(x, this.norm, T, H, c.rms_norm_eps);
    trace(this.layers.length + 1, out);
    return matmulRef(out, this.lm_head, T, c.vocab_size, H);
  }
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
