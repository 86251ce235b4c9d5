/**
 * Tests' mirror of the device layout of the block formats (pack.ts): decodes a part's buffer as
 * the WGSL decode files do, in plain TypeScript, so pack.test.ts can check that packing then
 * decoding gives dequantize()'s weights. Each weight is computed as dequant.ref.ts computes it:
 * an exact product of the f16 scale, the sub-block scale and the code (at most 24 significant
 * bits), then one rounded f32 add of the min where the format has one.
 */
import { f16ToF32 } from '../../util/half.ts';
import { GGML_UNITS, ggmlRowBytes, type GgmlBlockDType } from '../../gpu/buffers.ts';

const f = Math.fround;

/** The 6-bit scale and min j (0..7) of a Q4_K/Q5_K block's 12 bytes of scales at `s`. */
function scaleMinK4(b: Uint8Array, s: number, j: number): [number, number] {
  if (j < 4) return [b[s + j]! & 63, b[s + j + 4]! & 63];
  return [(b[s + j + 4]! & 15) | ((b[s + j - 4]! >> 6) << 4), (b[s + j + 4]! >> 4) | ((b[s + j]! >> 6) << 4)];
}

/** Weights of one device row at byte `at` of `bytes` (a row of `cols` weights of `dtype`). */
export function decodeDeviceRow(dtype: GgmlBlockDType, bytes: Uint8Array, at: number, cols: number): Float32Array {
  const out = new Float32Array(cols);
  const u = GGML_UNITS[dtype];
  const h = (o: number) => f16ToF32(bytes[o]! | (bytes[o + 1]! << 8));
  for (let c = 0; c < cols; c += dtype.endsWith('_k') ? 256 : 32) {
    const blk = c / (dtype.endsWith('_k') ? 256 : 32);
    const B = at + (dtype === 'q5_0' ? (blk >> 1) * u.unitBytes : blk * u.unitBytes);
    switch (dtype) {
      case 'q4_k':
      case 'q5_k': {
        const d = h(B);
        const dmin = h(B + 2);
        const qs = B + (dtype === 'q4_k' ? 16 : 48);
        for (let i = 0; i < 256; i++) {
          const [sc, m] = scaleMinK4(bytes, B + 4, i >> 5);
          const l = i & 31;
          let q: number;
          if (dtype === 'q4_k') {
            // q4's group order (pack.ts): weight 8w + b (b < 4) low in byte b of word w, 8w + b + 4 high.
            const w = l >> 3;
            const b = l & 7;
            q = (bytes[qs + 16 * (i >> 5) + 4 * w + (b & 3)]! >> (b < 4 ? 0 : 4)) & 15;
          } else {
            // As the file: chunk c's byte l holds weights 64c + l (low) and 64c + 32 + l (high).
            q = (bytes[qs + 32 * (i >> 6) + l]! >> (((i >> 5) & 1) * 4)) & 15;
            q |= ((bytes[B + 16 + l]! >> (i >> 5)) & 1) << 4;
          }
          out[c + i] = f(f(d * sc) * q) - f(dmin * m);
        }
        break;
      }
      case 'q6_k': {
        const d = h(at + (cols / 256) * 208 + 2 * blk);
        for (let i = 0; i < 256; i++) {
          const half = i >> 7;
          const k = i & 127;
          const ql = (bytes[B + 64 * half + (k & 63)]! >> ((k >> 6) * 4)) & 15;
          const qh = (bytes[B + 128 + 32 * half + (k & 31)]! >> (2 * (k >> 5))) & 3;
          const sc = (bytes[B + 192 + (i >> 4)]! << 24) >> 24;
          out[c + i] = f(d * sc) * ((ql | (qh << 4)) - 32);
        }
        break;
      }
      case 'q2_k': {
        const d = h(B + 80);
        const dmin = h(B + 82);
        for (let i = 0; i < 256; i++) {
          const s = bytes[B + (i >> 4)]!;
          const q = (bytes[B + 16 + 32 * (i >> 7) + (i & 31)]! >> (2 * ((i >> 5) & 3))) & 3;
          out[c + i] = f(f(d * (s & 15)) * q) - f(dmin * (s >> 4));
        }
        break;
      }
      case 'q3_k': {
        const d = h(B + 108);
        for (let i = 0; i < 256; i++) {
          const j = i >> 4;
          const lo = (bytes[B + 96 + (j & 7)]! >> (4 * (j >> 3))) & 15;
          const hi = (bytes[B + 104 + (j & 3)]! >> (2 * (j >> 2))) & 3;
          const sc = (lo | (hi << 4)) - 32;
          const ql = (bytes[B + 32 + 32 * (i >> 7) + (i & 31)]! >> (2 * ((i >> 5) & 3))) & 3;
          const hm = (bytes[B + (i & 31)]! >> (i >> 5)) & 1;
          out[c + i] = f(d * sc) * (ql - (hm ? 0 : 4));
        }
        break;
      }
      case 'q4_1':
      case 'q5_1': {
        const d = h(B);
        const m = h(B + 2);
        const qs = B + (dtype === 'q4_1' ? 4 : 8);
        for (let i = 0; i < 32; i++) {
          let q = (bytes[qs + (i & 15)]! >> ((i >> 4) * 4)) & 15;
          if (dtype === 'q5_1') q |= ((bytes[B + 4 + (i >> 3)]! >> (i & 7)) & 1) << 4;
          out[c + i] = f(d * q) + m;
        }
        break;
      }
      case 'q5_0': {
        const odd = blk & 1;
        const d = h(B + 2 * odd);
        const qh = B + 4 + 4 * odd;
        const qs = B + 12 + 16 * odd;
        for (let i = 0; i < 32; i++) {
          const q = ((bytes[qs + (i & 15)]! >> ((i >> 4) * 4)) & 15) | (((bytes[qh + (i >> 3)]! >> (i & 7)) & 1) << 4);
          out[c + i] = d * (q - 16);
        }
        break;
      }
    }
  }
  for (let i = 0; i < cols; i++) out[i] = f(out[i]!);
  return out;
}

/** All rows of a part's buffer (its `rows` rows of `cols` weights), row-major. */
export function decodeDevicePart(dtype: GgmlBlockDType, bytes: Uint8Array, rows: number, cols: number): Float32Array {
  const rowBytes = ggmlRowBytes(dtype, cols);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) out.set(decodeDeviceRow(dtype, bytes, r * rowBytes, cols), r * cols);
  return out;
}
