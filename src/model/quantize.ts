/**
 * `openchat quantize`: writes a quantized copy of a model folder, in the layout
 * src/model/quantized.ts describes and the loaders read. Node only (it writes files).
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bytesPerElement, QUANT_GROUP, quantLayout, type QuantFormat } from '../gpu/buffers.ts';
import { quantizeRows, type QuantizedRows } from '../kernels/quant.ref.ts';
import { decodeToF32 } from '../util/half.ts';
import { expectedTensors, loadConfig, type ModelConfig } from './config.ts';
import { Checkpoint, CheckpointError, writeSafetensors, type TensorSpec } from './safetensors.ts';
import { checkFinite, validateCheckpoint } from './weights.ts';
import { folderQuantization, QUANT_METHOD, quantizationFor, quantizedMatrices, scalesName, type Quantization } from './quantized.ts';

/** Source bytes widened and quantized at a time: the f32 copy of a whole 7B lm_head would be 0.5 GB. */
const STAGING_BYTES = 32 * 2 ** 20;

const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json', 'tokenizer.model'];

/**
 * Writes `out`: `dir`'s checkpoint quantized to `format` (one tensor in memory at a time),
 * its config.json with quantization_config, and its tokenizer files. Returns the bytes written.
 */
export async function quantizeCheckpoint(dir: string, out: string, format: QuantFormat, log: (line: string) => void = () => {}): Promise<number> {
  const config = await loadConfig(dir);
  if (await folderQuantization(dir) !== null) throw new CheckpointError(`${dir} is already quantized; quantize the original f16/bf16/f32 checkpoint instead`);
  const ckpt = await Checkpoint.open(dir);
  try {
    validateCheckpoint(ckpt, config);
    const quantization = quantizationFor(config, format);
    const quantized = quantizedMatrices(config, quantization);
    const DT = { f32: 'F32', f16: 'F16', bf16: 'BF16' } as const;
    const specs = quantizedSpecs(config, quantization, (name) => DT[ckpt.float(name).dtype]);
    mkdirSync(out, { recursive: true });
    const staging = new Uint8Array(STAGING_BYTES);
    // The scales of the matrix just quantized: written right after its codes.
    let pending: Uint16Array | null = null;
    let done = 0;
    const bytes = await writeSafetensors(
      join(out, 'model.safetensors'),
      specs,
      async (spec) => {
        if (pending && spec.name.endsWith('.scales')) {
          const s = pending;
          pending = null;
          return new Uint8Array(s.buffer, s.byteOffset, s.byteLength);
        }
        const e = ckpt.float(spec.name);
        const f = quantized.get(spec.name);
        if (!f) {
          const raw = await ckpt.read(spec.name);
          checkFinite(raw, e.dtype, e.file, spec.name);
          return raw;
        }
        const q = await quantizeTensor(ckpt, spec.name, f, staging);
        pending = q.scales;
        if (++done % 16 === 0) log(`  ${done} / ${quantized.size} matrices`);
        return q.codes;
      },
      { format: 'pt', quantization: format, quantization_group_size: String(QUANT_GROUP) },
    );
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    cfg.quantization_config = quantizationConfig(quantization);
    writeFileSync(join(out, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
    for (const f of TOKENIZER_FILES) if (existsSync(join(dir, f))) copyFileSync(join(dir, f), join(out, f));
    return bytes;
  } finally {
    ckpt.close();
  }
}

/**
 * The tensors of a folder quantized as `q` says, in the order of the table (expectedTensors):
 * each quantized matrix as its codes (U8) followed by its scales (F16), the rest in `floatType`.
 */
export function quantizedSpecs(config: ModelConfig, q: Quantization, floatType: (name: string) => TensorSpec['dtype']): TensorSpec[] {
  const quantized = quantizedMatrices(config, q);
  const specs: TensorSpec[] = [];
  for (const [name, shape] of expectedTensors(config)) {
    const f = quantized.get(name);
    if (f) {
      const L = quantLayout(f, shape[1]!);
      specs.push({ name, dtype: 'U8', shape: [shape[0]!, L.codeRowBytes] }, { name: scalesName(name), dtype: 'F16', shape: [shape[0]!, L.scalesPerRow] });
    } else {
      specs.push({ name, dtype: floatType(name), shape });
    }
  }
  return specs;
}

/** config.json's quantization_config for a folder quantized as `q` (what folderQuantization reads back). */
export function quantizationConfig(q: Quantization): Record<string, unknown> {
  return { quant_method: QUANT_METHOD, format: q.format, group_size: QUANT_GROUP, embed_tokens: q.embed_tokens, lm_head: q.lm_head };
}

/** One matrix quantized a staging buffer of rows at a time, into its whole codes and scales planes. */
async function quantizeTensor(ckpt: Checkpoint, name: string, format: QuantFormat, staging: Uint8Array): Promise<QuantizedRows> {
  const e = ckpt.float(name);
  const [rows, cols] = e.shape as [number, number];
  const L = quantLayout(format, cols);
  const codes = new Uint8Array(rows * L.codeRowBytes);
  const scales = new Uint16Array(rows * L.scalesPerRow);
  const rowBytes = cols * bytesPerElement(e.dtype);
  const rowsPerRead = Math.max(1, Math.floor(staging.byteLength / rowBytes));
  for (let r = 0; r < rows; r += rowsPerRead) {
    const n = Math.min(rowsPerRead, rows - r);
    const raw = await ckpt.read(name, staging.byteLength >= n * rowBytes ? staging : undefined, r * rowBytes, n * rowBytes);
    checkFinite(raw, e.dtype, e.file, name, r * cols);
    const q = quantizeRows(decodeToF32(raw, e.dtype), n, cols, format, name, r);
    codes.set(q.codes, r * L.codeRowBytes);
    scales.set(q.scales, r * L.scalesPerRow);
  }
  return { codes, scales };
}
