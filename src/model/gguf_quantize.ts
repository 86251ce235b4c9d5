/**
 * `openchat quantize` on a GGUF file: a copy with its float matrices as Q8_0 or Q4_0, which are
 * this project's q8 and q4 (the same math; the loader re-packs them losslessly), so llama.cpp
 * reads the copy too. Which matrices: those --quantize quantizes (quantized.ts). Node only.
 */
import { GGML_TYPES, ggmlBytes, type GgmlType } from '../kernels/ggml/types.ts';
import { dequantize } from '../kernels/ggml/dequant.ref.ts';
import { quantizeRows } from '../kernels/quant.ref.ts';
import { quantLayout, type QuantFormat } from '../gpu/buffers.ts';
import { f32ToF16 } from '../util/half.ts';
import { gv, writeGguf, type GgufTensorToWrite } from '../util/gguf_writer.ts';
import { GgufFile, type GgufValue } from '../util/gguf.ts';
import { ConfigError, loadConfig } from './config.ts';
import { ggufWeights } from './gguf_model.ts';
import { quantizationFor, quantizedMatrices } from './quantized.ts';

/** f32 rows [rows, cols] as one tensor of `type` (F32, F16, BF16, or Q8_0/Q4_0 by the project's q8/q4 rounding). */
export function encodeRows(values: Float32Array, rows: number, cols: number, type: GgmlType): Uint8Array {
  switch (type) {
    case 'F32':
      return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
    case 'F16':
    case 'BF16': {
      const out = new Uint16Array(values.length);
      const f32 = new Float32Array(1);
      const u32 = new Uint32Array(f32.buffer);
      for (let k = 0; k < values.length; k++) {
        if (type === 'F16') out[k] = f32ToF16(values[k]!);
        else {
          f32[0] = values[k]!;
          out[k] = (u32[0]! + 0x7fff + ((u32[0]! >>> 16) & 1)) >>> 16; // round to nearest even
        }
      }
      return new Uint8Array(out.buffer);
    }
    case 'Q8_0':
    case 'Q4_0': {
      const format = type === 'Q8_0' ? 'q8' : 'q4';
      const q = quantizeRows(values, rows, cols, format, 'tensor');
      const L = quantLayout(format, cols);
      const { blockBytes } = GGML_TYPES[type];
      const out = new Uint8Array(ggmlBytes(type, rows * cols));
      const view = new DataView(out.buffer);
      for (let r = 0; r < rows; r++) {
        for (let g = 0; g < cols / 32; g++) {
          const at = (r * (cols / 32) + g) * blockBytes;
          view.setUint16(at, q.scales[r * L.scalesPerRow + g]!, true);
          const codes = q.codes.subarray(r * L.codeRowBytes, (r + 1) * L.codeRowBytes);
          if (type === 'Q8_0') {
            out.set(codes.subarray(g * 32, g * 32 + 32), at + 2);
          } else {
            // q4: word w's byte b holds weights 8w+b (low) and 8w+b+4 (high); Q4_0: byte j holds j (low) and j+16 (high).
            const code = (j: number) => {
              const w = Math.floor(j / 8);
              const b = j % 8;
              const byte = codes[g * 16 + w * 4 + (b % 4)]!;
              return b < 4 ? byte & 15 : byte >> 4;
            };
            for (let j = 0; j < 16; j++) out[at + 2 + j] = code(j) | (code(j + 16) << 4);
          }
        }
      }
      return out;
    }
    default:
      throw new Error(`encodeRows: no encoder for ${type} here (syntheticGguf writes random ${type} blocks)`);
  }
}


/** ggml's general.file_type of a file whose matrices are mostly Q8_0 (7) or Q4_0 (2): llama.cpp's LLAMA_FTYPE_MOSTLY_*. */
const FILE_TYPE: Record<QuantFormat, number> = { q8: 7, q4: 2 };

/**
 * Writes `out`, a copy of the GGUF file `path` with the matrices --quantize `format` quantizes
 * as Q8_0 (q8) or Q4_0 (q4); the rest (norms, and what the format keeps wider) as stored. The
 * file's float matrices only: a quantized one would add the errors of two formats. Returns the bytes written.
 */
export async function quantizeGguf(path: string, out: string, format: QuantFormat, log: (line: string) => void = () => {}): Promise<number> {
  const config = await loadConfig(path);
  const file = await GgufFile.open(path);
  try {
    const weights = ggufWeights(file, config);
    const targets = quantizedMatrices(config, quantizationFor(config, format));
    const type: Record<QuantFormat, GgmlType> = { q8: 'Q8_0', q4: 'Q4_0' };
    const byGguf = new Map([...weights].map(([name, w]) => [w.gguf, { ...w, to: targets.get(name) }]));
    for (const w of byGguf.values()) {
      if (w.to && !['F32', 'F16', 'BF16'].includes(w.type)) {
        throw new ConfigError(path, `tensor ${w.gguf} is already ${w.type}; quantize an F16, BF16 or F32 GGUF instead (quantizing it again would add the errors of both)`);
      }
    }
    const metadata: Array<[string, GgufValue]> = [...file.metadata].filter(([k]) => k !== 'general.file_type' && k !== 'general.alignment');
    metadata.push(['general.file_type', gv.u32(FILE_TYPE[format])]);
    let done = 0;
    const tensors: GgufTensorToWrite[] = [...file.tensors.values()].map((t) => {
      const w = byGguf.get(t.name);
      const to = w?.to ? type[w.to] : null;
      return {
        name: t.name,
        type: to ?? t.type!,
        dims: [...t.dims],
        data: async () => {
          const raw = await file.readTensor(t.name);
          if (!to || !w) return raw;
          // Rows stay in the file's order (the q/k permutation is llama.cpp's to keep): groups never cross rows.
          const bytes = encodeRows(dequantize(w.type, raw, w.rows * w.cols), w.rows, w.cols, to);
          if (++done % 16 === 0) log(`  ${done} / ${targets.size} matrices`);
          return bytes;
        },
      };
    });
    await writeGguf(out, { metadata, tensors, alignment: file.alignment });
    let bytes = 0;
    for (const t of tensors) bytes += ggmlBytes(t.type, t.dims.reduce((a, b) => a * b, 1));
    return bytes;
  } finally {
    file.close();
  }
}
