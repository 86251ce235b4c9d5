/**
 * Quantized model folders: what `openchat quantize` writes and the loaders read back.
 *
 * A folder is a Hugging Face folder whose config.json carries
 *   "quantization_config": { "quant_method": "openchat-webgpu", "format": "q4", "group_size": 32, "lm_head": "q8" }
 * and whose model.safetensors (metadata "quantization": format) holds, for each quantized
 * matrix `P.weight` [rows, cols] (the seven projections of every layer and lm_head):
 *   P.weight  U8  [rows, codeRowBytes]    the codes plane (src/kernels/quant.ref.ts)
 *   P.scales  F16 [rows, scalesPerRow]    the scales plane, padded as on the device
 * so a part's bytes are copied to the device as they are, without arithmetic. Every other
 * tensor (embed_tokens, norms) is stored as in the source checkpoint. Tokenizer files are copied.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { QUANT_FORMATS, QUANT_GROUP, quantLayout, type QuantFormat } from '../gpu/buffers.ts';
import { lmHeadFormat, quantizeRows } from '../kernels/quant.ref.ts';
import { decodeToF32 } from '../util/half.ts';
import { expectedTensors, layerTensors, loadConfig, type ModelConfig } from './config.ts';
import { Checkpoint, CheckpointError, writeSafetensors, type TensorSpec } from './safetensors.ts';
import { checkFinite, validateCheckpoint } from './weights.ts';
import { diskFiles, type ModelSource } from '../util/files.ts';

export const QUANT_METHOD = 'openchat-webgpu';
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json', 'tokenizer.model'];

/** The matrices a format quantizes, and each one's format: the projections, and lm_head at lmHeadFormat(). */
export function quantizedMatrices(config: ModelConfig, format: QuantFormat): Map<string, QuantFormat> {
  const m = new Map<string, QuantFormat>();
  for (let i = 0; i < config.num_hidden_layers; i++) {
    for (const t of layerTensors(config, i)) if (t.kind === 'linear') m.set(t.name, format);
  }
  if (!config.tie_word_embeddings) m.set('lm_head.weight', lmHeadFormat(format));
  return m;
}

export function scalesName(weight: string): string {
  return weight.replace(/\.weight$/, '.scales');
}

/** The folder's quantization (from config.json), or null for an ordinary checkpoint. */
export function folderQuantization(dir: string, files: ModelSource = diskFiles): QuantFormat | null {
  const file = join(dir, 'config.json');
  // loadConfig has read and parsed this file already, with its errors.
  const raw = JSON.parse(files.readText(file)) as { quantization_config?: { quant_method?: unknown; format?: unknown; group_size?: unknown } };
  const q = raw.quantization_config;
  if (q === undefined || q === null) return null;
  if (q.quant_method !== QUANT_METHOD) {
    throw new CheckpointError(`${file}: quantization_config.quant_method ${JSON.stringify(q.quant_method)} is not read here; only folders written by 'openchat quantize' (${QUANT_METHOD}) are`);
  }
  const format = QUANT_FORMATS.find((f) => f === q.format);
  if (!format || q.group_size !== QUANT_GROUP) {
    throw new CheckpointError(`${file}: quantization_config needs format ${QUANT_FORMATS.join(' or ')} and group_size ${QUANT_GROUP}; got ${JSON.stringify(q.format)}, ${JSON.stringify(q.group_size)}`);
  }
  return format;
}

/**
 * Checks a quantized folder's tensors: the float ones as validateCheckpoint does, each
 * quantized matrix as its two planes of the right dtypes and shapes.
 */
export function validateQuantized(ckpt: Checkpoint, config: ModelConfig, format: QuantFormat): Map<string, QuantFormat> {
  const quantized = quantizedMatrices(config, format);
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
  if (extra.length) throw new CheckpointError(`${ckpt.dir}: unexpected tensor(s) in a ${format} folder: ${extra.slice(0, 5).join(', ')}`);
  for (const n of floats) {
    const e = ckpt.float(n);
    const want = shapes.get(n)!;
    if (e.shape.join() !== want.join()) throw new CheckpointError(`${e.file}: tensor '${n}' has shape [${e.shape}], but config.json implies [${want}]`);
  }
  return quantized;
}

/**
 * Writes `out`: `dir`'s checkpoint quantized to `format` (one tensor in memory at a time),
 * its config.json with quantization_config, and its tokenizer files. Returns the bytes written.
 */
export function quantizeCheckpoint(dir: string, out: string, format: QuantFormat, log: (line: string) => void = () => {}): number {
  const config = loadConfig(dir);
  if (folderQuantization(dir) !== null) throw new CheckpointError(`${dir} is already quantized; quantize the original f16/bf16/f32 checkpoint instead`);
  const ckpt = Checkpoint.open(dir);
  try {
    validateCheckpoint(ckpt, config);
    const quantized = quantizedMatrices(config, format);
    const specs: TensorSpec[] = [];
    const DT = { f32: 'F32', f16: 'F16', bf16: 'BF16' } as const;
    for (const [name, shape] of expectedTensors(config)) {
      const f = quantized.get(name);
      if (f) {
        const L = quantLayout(f, shape[1]!);
        specs.push({ name, dtype: 'U8', shape: [shape[0]!, L.codeRowBytes] }, { name: scalesName(name), dtype: 'F16', shape: [shape[0]!, L.scalesPerRow] });
      } else {
        specs.push({ name, dtype: DT[ckpt.float(name).dtype], shape });
      }
    }
    mkdirSync(out, { recursive: true });
    // The scales of the matrix just quantized: written right after its codes.
    let pending: Uint16Array | null = null;
    let done = 0;
    const bytes = writeSafetensors(
      join(out, 'model.safetensors'),
      specs,
      (spec) => {
        if (pending && spec.name.endsWith('.scales')) {
          const s = pending;
          pending = null;
          return new Uint8Array(s.buffer, s.byteOffset, s.byteLength);
        }
        const e = ckpt.float(spec.name);
        const raw = ckpt.read(spec.name);
        checkFinite(raw, e.dtype, e.file, spec.name);
        const f = quantized.get(spec.name);
        if (!f) return raw;
        const [rows, cols] = e.shape as [number, number];
        const q = quantizeRows(decodeToF32(raw, e.dtype), rows, cols, f, spec.name);
        pending = q.scales;
        if (++done % 16 === 0) log(`  ${done} / ${quantized.size} matrices`);
        return q.codes;
      },
      { format: 'pt', quantization: format, quantization_group_size: String(QUANT_GROUP) },
    );
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    cfg.quantization_config = { quant_method: QUANT_METHOD, format, group_size: QUANT_GROUP, lm_head: config.tie_word_embeddings ? null : lmHeadFormat(format) };
    writeFileSync(join(out, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
    for (const f of TOKENIZER_FILES) if (existsSync(join(dir, f))) copyFileSync(join(dir, f), join(out, f));
    return bytes;
  } finally {
    ckpt.close();
  }
}
