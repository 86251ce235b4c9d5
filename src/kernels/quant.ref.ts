/**
 * Quantized weight formats and their CPU reference: round-to-nearest per group of
 * QUANT_GROUP = 32 consecutive weights of a row, one f16 scale `d` per group.
 *
 *   q8: int8 codes c in [-127, 127],  w = c * d,        d = max|w| / 127     (llama.cpp's Q8_0 math)
 *       8.5 bits per weight: 32 bytes of codes + 2 bytes of scale per group.
 *   q4: 4-bit codes c in [0, 15],     w = (c - 8) * d,  d = m / -8, m the group's weight of
 *       largest magnitude (so m itself is exact and the 16 levels are all used; llama.cpp's
 *       Q4_0 math, MLC's q4f16_1 storage idea): 4.5 bits per weight: 16 + 2 bytes per group.
 * The scale is rounded to f16 first and the codes are computed with the rounded scale, so
 * the dequantized weight is exactly c * d in f32 on the CPU and in the kernels.
 *
 * Layout (one source: `quantLayout` in src/gpu/buffers.ts). A quantized matrix [rows, cols] (cols % 32 == 0) is two
 * planes, each row 16-byte aligned so GPU lanes can load 16-byte words:
 *   codes  [rows, codeRowBytes]: q8 one byte per weight (two's complement); q4 a u32 word per
 *          8 weights, byte b of the word holding weight b in its low nibble and weight b + 4 in
 *          its high nibble (so two masks give weights 0..3 and 4..7 as bytes).
 *   scales [rows, scaleRowBytes]: f16, cols / 32 per row, padded with zeros to a multiple of 8.
 * On the device each matrix part is one buffer: its rows' codes, then their scales.
 */
import { f16Table, f16ToF32, f32ToF16 } from '../util/half.ts';
import { QUANT_GROUP, quantLayout, type QuantFormat } from '../gpu/buffers.ts';

export interface QuantizedRows {
  /** [rows, codeRowBytes] */
  codes: Uint8Array;
  /** f16 bits [rows, scalesPerRow] */
  scales: Uint16Array;
}

/** Round half away from zero: symmetric for w and -w. */
function roundHalfAway(v: number): number {
  return Math.sign(v) * Math.round(Math.abs(v));
}

/**
 * Quantizes `rows` rows of `values` (f32, row-major [rows, cols]): the definition, written to
 * be read. `quantizeRows` below computes the same bytes fast. `name` goes into the error for a
 * scale past f16's range (a weight above 127 * 65504: not a language model's).
 */
export function quantizeRowsPlain(values: Float32Array, rows: number, cols: number, format: QuantFormat, name = 'tensor'): QuantizedRows {
  const L = quantLayout(format, cols);
  const codes = new Uint8Array(rows * L.codeRowBytes);
  const scales = new Uint16Array(rows * L.scalesPerRow);
  const q = new Int32Array(QUANT_GROUP);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < cols / QUANT_GROUP; g++) {
      const at = r * cols + g * QUANT_GROUP;
      let m = 0;
      for (let j = 0; j < QUANT_GROUP; j++) {
        const v = values[at + j]!;
        if (Math.abs(v) > Math.abs(m)) m = v;
      }
      const bits = f32ToF16(format === 'q8' ? Math.abs(m) / 127 : m / -8);
      const d = f16ToF32(bits);
      if (!Number.isFinite(d)) throw new RangeError(`${name}: row ${r} has a weight of ${m}, too large for an f16 ${format} scale`);
      scales[r * L.scalesPerRow + g] = bits;
      const lo = format === 'q8' ? -127 : 0;
      const hi = format === 'q8' ? 127 : 15;
      const offset = format === 'q8' ? 0 : 8;
      for (let j = 0; j < QUANT_GROUP; j++) {
        const c = d === 0 ? offset : roundHalfAway(values[at + j]! / d) + offset;
        q[j] = Math.min(hi, Math.max(lo, c));
      }
      if (format === 'q8') {
        for (let j = 0; j < QUANT_GROUP; j++) codes[r * L.codeRowBytes + g * QUANT_GROUP + j] = q[j]! & 0xff;
      } else {
        const base = r * L.codeRowBytes + g * (QUANT_GROUP / 2);
        for (let w = 0; w < QUANT_GROUP / 8; w++) {
          for (let b = 0; b < 4; b++) codes[base + w * 4 + b] = q[w * 8 + b]! | (q[w * 8 + b + 4]! << 4);
        }
      }
    }
  }
  return { codes, scales };
}

/**
 * quantizeRowsPlain, byte for byte (quant.fast.test.ts checks it on random rows, all-zero groups
 * and extreme values), written for speed: a 7B model is 7e9 weights, and the plain loop made
 * quantizing one take most of an hour. One loop per format, rounding by floors only
 * (roundHalfAwayFast), scales widened by table, codes written straight into their plane
 * (bench/RESULTS.md, "7B q4 under 4.2 GB"). `row0`: where these rows sit in the tensor, for the error.
 */
export function quantizeRows(values: Float32Array, rows: number, cols: number, format: QuantFormat, name = 'tensor', row0 = 0): QuantizedRows {
  const L = quantLayout(format, cols);
  const codes = new Uint8Array(rows * L.codeRowBytes);
  const scales = new Uint16Array(rows * L.scalesPerRow);
  const half = f16Table();
  const groups = cols / QUANT_GROUP;
  const q8 = format === 'q8';
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      const at = r * cols + g * QUANT_GROUP;
      // The first weight of largest magnitude, as quantizeRowsPlain picks it.
      let m = 0;
      let am = 0;
      for (let j = at; j < at + QUANT_GROUP; j++) {
        const v = values[j]!;
        const a = Math.abs(v);
        if (a > am) {
          am = a;
          m = v;
        }
      }
      const bits = f32ToF16(q8 ? am / 127 : m / -8);
      const d = half[bits]!;
      if (!Number.isFinite(d)) throw new RangeError(`${name}: row ${row0 + r} has a weight of ${m}, too large for an f16 ${format} scale`);
      scales[r * L.scalesPerRow + g] = bits;
      if (q8) {
        const out = r * L.codeRowBytes + g * QUANT_GROUP;
        for (let j = 0; j < QUANT_GROUP; j++) {
          let c = 0;
          if (d !== 0) {
            c = roundHalfAwayFast(values[at + j]! / d);
            c = c > 127 ? 127 : c < -127 ? -127 : c;
          }
          codes[out + j] = c & 0xff;
        }
      } else {
        const out = r * L.codeRowBytes + g * (QUANT_GROUP / 2);
        for (let w = 0; w < QUANT_GROUP / 8; w++) {
          for (let b = 0; b < 4; b++) {
            codes[out + w * 4 + b] = q4Code(values[at + w * 8 + b]!, d) | (q4Code(values[at + w * 8 + b + 4]!, d) << 4);
          }
        }
      }
    }
  }
  return { codes, scales };
}

/** One q4 code of `v` under scale `d` (with its offset of 8), as quantizeRowsPlain computes it. */
function q4Code(v: number, d: number): number {
  if (d === 0) return 8;
  const c = roundHalfAwayFast(v / d) + 8;
  return c > 15 ? 15 : c < 0 ? 0 : c;
}

/**
 * roundHalfAway (Math.sign(x) * Math.round(|x|)) in floors: Math.round is many times slower
 * than Math.floor in Node 20's V8, and a branch on the sign of random weights mispredicts half
 * the time; together they were most of the loop (bench/RESULTS.md). t = floor(x) and
 * f = floor(2 (x - t)) give round-half-up; x - t is exact except for tiny negative x, where it
 * rounds to 1 and f to 2 (hence f - (f >> 1): f at most 1); a negative exact half then moves
 * down to round away (c - x is exact: c is an integer within 0.5 of x).
 */
function roundHalfAwayFast(x: number): number {
  const t = Math.floor(x);
  const f = Math.floor((x - t) * 2);
  const c = t + f - (f >> 1);
  return c - x === 0.5 && x < 0 ? c - 1 : c;
}

/** The weights the codes stand for: what every quantized kernel must compute with. */
export function dequantizeRows(qr: QuantizedRows, rows: number, cols: number, format: QuantFormat): Float32Array {
  const L = quantLayout(format, cols);
  const out = new Float32Array(rows * cols);
  const codes8 = new Int8Array(qr.codes.buffer, qr.codes.byteOffset, qr.codes.byteLength);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < cols; i++) {
      const d = f16ToF32(qr.scales[r * L.scalesPerRow + Math.floor(i / QUANT_GROUP)]!);
      let c: number;
      if (format === 'q8') c = codes8[r * L.codeRowBytes + i]!;
      else {
        const word = Math.floor(i / 8);
        const j = i % 8;
        const byte = qr.codes[r * L.codeRowBytes + word * 4 + (j % 4)]!;
        c = (j < 4 ? byte & 15 : byte >> 4) - 8;
      }
      out[r * cols + i] = Math.fround(c * d);
    }
  }
  return out;
}

/** Both planes of rows [row0, row0 + n) as one part's device bytes: codes, then scales. */
export function partBytes(qr: QuantizedRows, row0: number, n: number, format: QuantFormat, cols: number): Uint8Array {
  const L = quantLayout(format, cols);
  const out = new Uint8Array(n * L.rowBytes);
  out.set(qr.codes.subarray(row0 * L.codeRowBytes, (row0 + n) * L.codeRowBytes));
  const s = new Uint8Array(qr.scales.buffer, qr.scales.byteOffset + row0 * L.scaleRowBytes, n * L.scaleRowBytes);
  out.set(s, n * L.codeRowBytes);
  return out;
}

/** What the two vocabulary matrices are stored as beside projections quantized to one format. */
export interface VocabFormats {
  embed_tokens: QuantFormat;
  lm_head: QuantFormat;
}

/**
 * The one place the vocabulary matrices' formats are chosen. Under q4: embed_tokens q8 and
 * lm_head q4, 4.14 GB for 7B (the issue's bound is 4.2 GB; both at q8 would be 4.21). Of the two
 * ways to spend the same bytes, this one measured better on every figure: on the golden cases
 * against Hugging Face (top-1 36.3% vs 32.2%, KL 0.186 vs 0.249, with embed_tokens q4 and lm_head
 * q8) and on a 32-layer synthetic model against its own unquantized logits (KL 0.133 vs 0.137).
 * Both are random weights; llama.cpp's Q4_0 makes the opposite choice (output matrix kept
 * higher, token embedding at the base type) from trained models, so this is the line to change
 * if a trained checkpoint measures otherwise (bench/RESULTS.md, "7B q4 under 4.2 GB").
 * Under q8 both are q8.
 */
export function vocabFormats(format: QuantFormat): VocabFormats {
  return format === 'q4' ? { embed_tokens: 'q8', lm_head: 'q4' } : { embed_tokens: 'q8', lm_head: 'q8' };
}
