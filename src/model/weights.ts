/**
 * Matching a checkpoint's tensors against what the config says the network has.
 * Everything that can be wrong is reported before a byte of weights is loaded.
 */
import { expectedTensors, type ModelConfig } from './config.ts';
import type { WeightDType } from '../gpu/buffers.ts';
import { CheckpointError, type Checkpoint } from './safetensors.ts';

// Buffers that older Llama exports saved with the weights; recomputed from
// rope_theta here, so their presence is harmless.
const IGNORED = /\.rotary_emb\.inv_freq$/;

export function validateCheckpoint(ckpt: Checkpoint, config: ModelConfig): void {
  const expected = expectedTensors(config);
  const missing: string[] = [];
  for (const [name, shape] of expected) {
    const e = ckpt.tensors.get(name);
    if (!e) {
      missing.push(name);
      continue;
    }
    if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(
        `${e.file}: tensor '${name}' has shape [${e.shape}], but config.json implies [${shape}] ` +
          `(hidden_size ${config.hidden_size}, heads ${config.num_attention_heads}/${config.num_key_value_heads}, ` +
          `head_dim ${config.head_dim}, intermediate_size ${config.intermediate_size}, vocab_size ${config.vocab_size})`,
      );
    }
  }
  if (missing.length) {
    const shown = missing.slice(0, 5).map((n) => `'${n}'`).join(', ');
    throw new CheckpointError(
      `${ckpt.dir}: ${missing.length} tensor(s) missing from the checkpoint: ${shown}${missing.length > 5 ? ', ...' : ''}. ` +
        'Is the download complete (all shards present)?',
    );
  }
  const extra = [...ckpt.tensors.keys()].filter((n) => !expected.has(n) && !IGNORED.test(n));
  if (extra.length) {
    const hint = config.tie_word_embeddings && extra.includes('lm_head.weight') ? ' (tie_word_embeddings is true, yet lm_head.weight is present)' : '';
    throw new CheckpointError(
      `${ckpt.dir}: unexpected tensor(s) not used by ${config.architecture} with this config: ` +
        `${extra.slice(0, 5).map((n) => `'${n}'`).join(', ')}${extra.length > 5 ? ', ...' : ''}${hint}`,
    );
  }
}

/**
 * Per dtype, on little-endian 32-bit words: `exp` masks the exponent field of
 * each element in the word (two 16-bit elements, or one f32), `carry` is its
 * lowest bit. exponent + carry reaches the element's sign bit (`sign`) exactly
 * when the exponent is all ones: Inf or NaN.
 */
const BITS = {
  f16: { exp: 0x7c007c00, carry: 0x04000400, sign: 0x80008000, elementBytes: 2, elementExp: 0x7c00 },
  bf16: { exp: 0x7f807f80, carry: 0x00800080, sign: 0x80008000, elementBytes: 2, elementExp: 0x7f80 },
  f32: { exp: 0x7f800000, carry: 0x00800000, sign: 0x80000000 | 0, elementBytes: 4, elementExp: 0x7f800000 },
} as const;

/**
 * Index of the first Inf or NaN element of raw little-endian `bytes` of `dtype`,
 * or -1. `bytes` must start 4-byte aligned, at an element boundary. A branch-free
 * pass over 32-bit words (about 8 GB/s on one core), so it can run on every byte
 * a model loads; figures in bench/RESULTS.md, "Load-time weight check".
 */
export function firstNonFinite(bytes: Uint8Array, dtype: WeightDType): number {
  const { exp, carry, sign, elementBytes, elementExp } = BITS[dtype];
  const words = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  const n4 = words.length & ~3;
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 0;
  // Four accumulators: independent chains, so the loop is not one long dependency.
  for (let i = 0; i < n4; i += 4) {
    a |= (words[i]! & exp) + carry;
    b |= (words[i + 1]! & exp) + carry;
    c |= (words[i + 2]! & exp) + carry;
    d |= (words[i + 3]! & exp) + carry;
  }
  for (let i = n4; i < words.length; i++) a |= (words[i]! & exp) + carry;
  const tailBytes = bytes.byteLength & 3; // a last 16-bit element outside the words
  if (((a | b | c | d) & sign) === 0 && tailBytes < 2) return -1;
  // Something is there (or a tail to look at): find the first one, element by element.
  const count = Math.floor(bytes.byteLength / elementBytes);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < count; i++) {
    const v = elementBytes === 2 ? view.getUint16(i * 2, true) : view.getUint32(i * 4, true);
    if ((v & elementExp) === elementExp) return i;
  }
  return -1;
}

/** Throws a CheckpointError naming the file, tensor and element when `bytes` (elements from `element0` on) hold an Inf or NaN. */
export function checkFinite(bytes: Uint8Array, dtype: WeightDType, file: string, name: string, element0 = 0): void {
  const i = firstNonFinite(bytes, dtype);
  if (i < 0) return;
  throw new CheckpointError(
    `${file}: tensor '${name}' holds a non-finite value (Inf or NaN) at element ${element0 + i}: the file is corrupt ` +
      'or was saved from a diverged model, and would make every output NaN. Re-download or re-export it',
  );
}
