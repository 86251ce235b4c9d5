/**
 * Loading a GGUF file's weights onto the device, as load.ts does a folder's: tensor by tensor,
 * a bounded run of rows at a time (never the whole file in memory, no mmap), each matrix in the
 * device layout of its type (src/kernels/ggml/pack.ts: Q8_0 and Q4_0 re-packed losslessly into
 * the project's q8/q4, the K-quants and the other block formats in their own layouts, the float
 * types as dense), rows put back in Hugging Face's order (gguf_model.ts).
 */
import type { Gpu } from '../gpu/device.ts';
import { allocateMatrix, createStorageBuffer, quantLayout, writeBuffer, type GpuMatrix, type QuantFormat, type WeightDType } from '../gpu/buffers.ts';
import { GGML_TYPES, type GgmlType } from '../kernels/ggml/types.ts';
import { GgufFile } from '../util/gguf.ts';
import { checkFinite } from './weights.ts';
import { GLOBAL_TENSORS, layerTensors, type ModelConfig } from './config.ts';
import { dequantizeGgufWeight, ggufRowBytes, ggufWeights, readGgufRows, type GgufWeight } from './gguf_model.ts';
import { LoadMeter, STAGING_BYTES, type DeviceWeights, type Layer, type LoadOptions } from './load.ts';
import { ggmlDeviceDType, packGgmlRows } from '../kernels/ggml/pack.ts';
import { dequantize } from '../kernels/ggml/dequant.ref.ts';
import { quantizeRows } from '../kernels/quant.ref.ts';
import { quantizationFor, quantizedMatrices } from './quantized.ts';
import { ConfigError } from './config.ts';

/** The float types, as the folder loader names them. */
const FLOAT_DTYPES: Partial<Record<GgmlType, WeightDType>> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

export async function loadGgufWeights(
  gpu: Gpu,
  path: string,
  config: ModelConfig,
  opts: LoadOptions,
): Promise<DeviceWeights> {
  const file = await GgufFile.open(path, opts.files);
  try {
    const weights = ggufWeights(file, config);
    const atLoad = opts.quantize ? quantizedMatrices(config, quantizationFor(config, opts.quantize)) : new Map<string, QuantFormat>();
    for (const name of atLoad.keys()) {
      const w = weights.get(name)!;
      if (!FLOAT_DTYPES[w.type]) {
        throw new ConfigError(path, `--quantize ${opts.quantize}: tensor ${w.gguf} is already ${w.type}; quantizing it again would add the errors of both (load the file as it is, or an F16 GGUF with --quantize)`);
      }
    }
    let totalBytes = 0;
    for (const w of weights.values()) totalBytes += ggufRowBytes(w) * w.rows;
    const meter = new LoadMeter(gpu, weights.size, totalBytes, opts.onProgress);
    const staging = new Uint8Array(opts.stagingBytes ?? STAGING_BYTES);

    const matrix = async (name: string): Promise<GpuMatrix> => {
      const w = weights.get(name)!;
      const quantize = atLoad.get(name);
      const rowBytes = ggufRowBytes(w);
      const m = allocateMatrix(gpu, w.rows, w.cols, quantize ?? ggmlDeviceDType(w.type), w.gguf);
      const rowsPerRead = Math.max(1, Math.floor(staging.byteLength / rowBytes));
      for (const part of m.parts) {
        for (let r = 0; r < part.rows; r += rowsPerRead) {
          const n = Math.min(rowsPerRead, part.rows - r);
          const bytes = await readGgufRows(file, w, part.row0 + r, n, staging);
          checkFiniteRows(path, w, bytes, part.row0 + r);
          if (quantize) {
            const L = quantLayout(quantize, w.cols);
            const q = quantizeRows(dequantize(w.type, bytes, n * w.cols), n, w.cols, quantize, w.gguf, part.row0 + r);
            writeBuffer(gpu, part.buffer, q.codes, r * L.codeRowBytes);
            writeBuffer(gpu, part.buffer, q.scales, part.rows * L.codeRowBytes + r * L.scaleRowBytes);
          } else {
            for (const write of packGgmlRows(w.type, bytes, n, w.cols, r, part.rows)) writeBuffer(gpu, part.buffer, write.data, write.offset);
          }
          await meter.throttle(bytes.byteLength);
        }
      }
      meter.tick(rowBytes * w.rows);
      return m;
    };
    const vector = async (name: string): Promise<GPUBuffer> => {
      const w = weights.get(name)!;
      const values = await dequantizeGgufWeight(file, w);
      const buffer = createStorageBuffer(gpu, values.byteLength, w.gguf);
      writeBuffer(gpu, buffer, values);
      meter.tick(ggufRowBytes(w));
      return buffer;
    };

    const layers: Layer[] = [];
    for (let i = 0; i < config.num_hidden_layers; i++) {
      const entries: [string, GPUBuffer | GpuMatrix][] = [];
      for (const t of layerTensors(config, i)) entries.push([t.key, t.kind === 'norm' ? await vector(t.name) : await matrix(t.name)]);
      // Every key of Layer comes from the table layerTensors() walks, each of its kind, so the object is complete.
      layers.push(Object.fromEntries(entries) as Layer);
    }
    const [embed, norm, head] = GLOBAL_TENSORS.map((t) => t.name);
    const embed_tokens = await matrix(embed);
    const lm_head = config.tie_word_embeddings ? embed_tokens : await matrix(head);
    const normBuffer = await vector(norm);
    await gpu.device.queue.onSubmittedWorkDone();
    return { embed_tokens, layers, norm: normBuffer, lm_head, checkpointBytes: totalBytes };
  } finally {
    file.close();
  }
}

/**
 * A run of rows must hold only finite weights (a NaN scale poisons every token): float types
 * checked as the folder loader checks them, block types by their f16 scale fields (the codes are
 * integers), so the check costs a few reads per block rather than a dequantization.
 */
function checkFiniteRows(path: string, w: GgufWeight, bytes: Uint8Array, row0: number): void {
  const float = FLOAT_DTYPES[w.type];
  if (float) return checkFinite(bytes, float, path, w.gguf, row0 * w.cols);
  const { blockBytes, blockValues, halfFields } = GGML_TYPES[w.type];
  for (let b = 0; b * blockBytes < bytes.byteLength; b++) {
    for (const f of halfFields) {
      const at = b * blockBytes + f;
      if (((bytes[at + 1]! << 8) & 0x7c00) === 0x7c00) {
        const k = row0 * w.cols + b * blockValues;
        throw new ConfigError(path, `tensor ${w.gguf} has a non-finite scale in its block at row ${Math.floor(k / w.cols)} (HF order), column ${k % w.cols}: the file is corrupt`);
      }
    }
  }
}
