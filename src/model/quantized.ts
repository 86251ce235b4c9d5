/**
 * Quantized model folders: what `openchat quantize` writes and the loaders read back.
 *
 * A folder is a Hugging Face folder whose config.json carries
 *   "quantization_config": { "quant_method": "openchat-webgpu", "format": "q4", "group_size": 32,
 *                            "embed_tokens": "q4", "lm_head": "q8" }
 * and whose model.safetensors (metadata "quantization": format) holds, for each quantized
 * matrix `P.weight` [rows, cols] (the seven projections of every layer, embed_tokens, lm_head):
 *   P.weight  U8  [rows, codeRowBytes]    the codes plane (src/kernels/quant.ref.ts)
 *   P.scales  F16 [rows, scalesPerRow]    the scales plane, padded as on the device
 * so a part's bytes are copied to the device as they are, without arithmetic. Every other
 * tensor (norms) is stored as in the source checkpoint. Tokenizer files are copied.
 * `embed_tokens` and `lm_head` say what the folder holds, whatever vocabFormats() chooses
 * today: folders written before embed_tokens was quantized have no `embed_tokens` key (it is
 * stored as a float tensor) and load as they are; null is "stored as in the source" (lm_head
 * of a model with tie_word_embeddings, which has none).
 * The writer is src/model/quantize.ts (Node only); this module is what the loaders need.
 */
import { join } from 'node:path';
import { QUANT_FORMATS, QUANT_GROUP, quantLayout, type QuantFormat } from '../gpu/buffers.ts';
import { vocabFormats } from '../kernels/quant.ref.ts';
import { expectedTensors, layerTensors, type ModelConfig } from './config.ts';
import { CheckpointError, type Checkpoint } from './safetensors.ts';
import { diskFiles, type ModelSource } from '../util/files.ts';

export const QUANT_METHOD = 'openchat-webgpu';

/** What a quantized model holds: the projections' format, and the vocabulary matrices' (null: as stored). */
export interface Quantization {
  format: QuantFormat;
  embed_tokens: QuantFormat | null;
  lm_head: QuantFormat | null;
}

/**
 * What quantizing to `format` makes (vocabFormats(), src/kernels/quant.ref.ts). With
 * tie_word_embeddings the one matrix plays both parts, so it takes the more precise of the two
 * formats (the bytes of one vocabulary matrix are saved already).
 */
export function quantizationFor(config: ModelConfig, format: QuantFormat): Quantization {
  const v = vocabFormats(format);
  if (!config.tie_word_embeddings) return { format, ...v };
  return { format, embed_tokens: v.embed_tokens === 'q8' || v.lm_head === 'q8' ? 'q8' : 'q4', lm_head: null };
}

/** The matrices a quantization stores quantized, and each one's format. */
export function quantizedMatrices(config: ModelConfig, q: Quantization): Map<string, QuantFormat> {
  const m = new Map<string, QuantFormat>();
  for (let i = 0; i < config.num_hidden_layers; i++) {
    for (const t of layerTensors(config, i)) if (t.kind === 'linear') m.set(t.name, q.format);
  }
  if (q.embed_tokens) m.set('model.embed_tokens.weight', q.embed_tokens);
  if (q.lm_head && !config.tie_word_embeddings) m.set('lm_head.weight', q.lm_head);
  return m;
}

export function scalesName(weight: string): string {
  return weight.replace(/\.weight$/, '.scales');
}

/** The folder's quantization (from config.json), or null for an ordinary checkpoint. */
export async function folderQuantization(dir: string, files: ModelSource = diskFiles): Promise<Quantization | null> {
  const file = join(dir, 'config.json');
  // loadConfig has read and parsed this file already, with its errors.
  const raw = JSON.parse(await files.readText(file)) as { quantization_config?: Record<string, unknown> | null };
  const q = raw.quantization_config;
  if (q === undefined || q === null) return null;
  if (q.quant_method !== QUANT_METHOD) {
    throw new CheckpointError(`${file}: quantization_config.quant_method ${JSON.stringify(q.quant_method)} is not read here; only folders written by 'openchat quantize' (${QUANT_METHOD}) are`);
  }
  const format = QUANT_FORMATS.find((f) => f === q.format);
  if (!format || q.group_size !== QUANT_GROUP) {
    throw new CheckpointError(`${file}: quantization_config needs format ${QUANT_FORMATS.join(' or ')} and group_size ${QUANT_GROUP}; got ${JSON.stringify(q.format)}, ${JSON.stringify(q.group_size)}`);
  }
  const matrix = (key: 'embed_tokens' | 'lm_head'): QuantFormat | null => {
    const v = q[key];
    if (v === undefined || v === null) return null;
    const f = QUANT_FORMATS.find((x) => x === v);
    if (!f) throw new CheckpointError(`${file}: quantization_config.${key} is ${JSON.stringify(v)}; it must be ${QUANT_FORMATS.join(', ')} or null (rewrite the folder with openchat quantize)`);
    return f;
  };
  return { format, embed_tokens: matrix('embed_tokens'), lm_head: matrix('lm_head') };
}

/**
 * Checks a quantized folder's tensors: the float ones as validateCheckpoint does, each
 * quantized matrix as its two planes of the right dtypes and shapes.
 */
export function validateQuantized(ckpt: Checkpoint, config: ModelConfig, q: Quantization): Map<string, QuantFormat> {
  const quantized = quantizedMatrices(config, q);
  const shapes = expectedTensors(config);
  for (const [name, f] of quantized) {
    const [rows, cols] = shapes.get(name)!;
    const L = quantLayout(f, cols!);
    for (const [tensor, dtype, shape] of [[name, 'u8', [rows, L.codeRowBytes]], [scalesName(name), 'f16', [rows, L.scalesPerRow]]] as const) {
      const e = ckpt.get(tensor);
      if (e.dtype !== dtype || e.shape.length !== 2 || e.shape[0] !== shape[0] || e.shape[1] !== shape[1]) {
        throw new CheckpointError(`${e.file}: '${tensor}' is ${e.dtype.toUpperCase()} [${e.shape}]; a ${f} folder stores it as ${dtype.toUpperCase()} [${shape}] (rewrite it with openchat quantize)`);
      }
    }
  }
  // The float tensors: validate against a view without the quantized planes.
  const floats = new Set([...shapes.keys()].filter((n) => !quantized.has(n)));
  const planes = new Set([...quantized.keys()].flatMap((n) => [n, scalesName(n)]));
  const extra = [...ckpt.tensors.keys()].filter((n) => !floats.has(n) && !planes.has(n));
  if (extra.length) throw new CheckpointError(`${ckpt.dir}: unexpected tensor(s) in a ${q.format} folder: ${extra.slice(0, 5).join(', ')}`);
  for (const n of floats) {
    const e = ckpt.float(n);
    const want = shapes.get(n)!;
    if (e.shape.join() !== want.join()) throw new CheckpointError(`${e.file}: tensor '${n}' has shape [${e.shape}], but config.json implies [${want}]`);
  }
  return quantized;
}
