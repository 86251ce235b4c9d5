/**
 * The whole Mistral forward pass in plain TypeScript, built from the kernels'
 * CPU references. Slow, but every step is visible: this is the version to read
 * first, and the GPU forward pass (model.ts) is tested against the same goldens.
 */
import { loadConfig, type ModelConfig } from './config.ts';
import { Checkpoint } from './safetensors.ts';
import { validateCheckpoint } from './weights.ts';
import { decodeToF32 } from '../util/half.ts';
import { embeddingRef } from '../kernels/embedding.ref.ts';
import { rmsNormRef } from '../kernels/rmsnorm.ref.ts';
import { matmulRef } from '../kernels/matmul/matmul.ref.ts';
import { swigluRef } from '../kernels/matmul/swiglu.ref.ts';
import { ropeRef } from '../kernels/rope.ref.ts';
import { attentionRef } from '../kernels/attention.ref.ts';

interface CpuLayer {
  input_layernorm: Float32Array;
  q_proj: Float32Array;
  k_proj: Float32Array;
  v_proj: Float32Array;
  o_proj: Float32Array;
  post_attention_layernorm: Float32Array;
  gate_proj: Float32Array;
  up_proj: Float32Array;
  down_proj: Float32Array;
}

function addInPlace(x: Float32Array, y: Float32Array): void {
  for (let i = 0; i < x.length; i++) x[i]! += y[i]!;
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

  static load(dir: string): CpuModel {
    const config = loadConfig(dir);
    const ckpt = Checkpoint.open(dir);
    try {
      validateCheckpoint(ckpt, config);
      const w = (name: string) => decodeToF32(ckpt.read(name), ckpt.get(name).dtype);
      const layers: CpuLayer[] = [];
      for (let i = 0; i < config.num_hidden_layers; i++) {
        const p = `model.layers.${i}.`;
        layers.push({
          input_layernorm: w(p + 'input_layernorm.weight'),
          q_proj: w(p + 'self_attn.q_proj.weight'),
          k_proj: w(p + 'self_attn.k_proj.weight'),
          v_proj: w(p + 'self_attn.v_proj.weight'),
          o_proj: w(p + 'self_attn.o_proj.weight'),
          post_attention_layernorm: w(p + 'post_attention_layernorm.weight'),
          gate_proj: w(p + 'mlp.gate_proj.weight'),
          up_proj: w(p + 'mlp.up_proj.weight'),
          down_proj: w(p + 'mlp.down_proj.weight'),
        });
      }
      const embed = w('model.embed_tokens.weight');
      const head = config.tie_word_embeddings ? embed : w('lm_head.weight');
      return new CpuModel(config, embed, layers, w('model.norm.weight'), head);
    } finally {
      ckpt.close();
    }
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

  /** Runs `ids` at positions position.. and returns their logits [ids.length, vocab_size]. */
  forward(ids: number[]): Float32Array {
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
    });
    this.length += T;
    const out = rmsNormRef(x, this.norm, T, H, c.rms_norm_eps);
    return matmulRef(out, this.lm_head, T, c.vocab_size, H);
  }
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
