/**
 * 16-bit float formats as the checkpoints store them.
 *  - f16 (IEEE half): 1 sign, 5 exponent, 10 mantissa bits.
 *  - bf16 (bfloat16): the top 16 bits of an f32 (1 sign, 8 exponent, 7 mantissa),
 *    so widening is exact: shift left by 16. OpenChat 3.5 ships bf16.
 */
import type { WeightDType } from '../gpu/buffers.ts';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24; // subnormal
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function bf16ToF32(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0]!;
}

/** Round-to-nearest-even f32 -> f16 bits. */
export function f32ToF16(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}

/** Round-to-nearest-even f32 -> bf16 bits. */
export function f32ToBf16(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return ((x >>> 16) | 0x40) & 0xffff; // keep NaN a NaN
  const rounded = x + 0x7fff + ((x >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/** f16ToF32 of every half, built on first use: widening a tensor is then one load per element. */
let halfTable: Float32Array | null = null;

export function f16Table(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(0x10000);
    for (let h = 0; h < 0x10000; h++) halfTable[h] = f16ToF32(h);
  }
  return halfTable;
}

/**
 * Widens raw little-endian tensor bytes of `dtype` to f32 (the CPU path, quantizing). Loads
 * stream whole tensors through here, so it reads the bytes as a Uint16Array (copied once if
 * they sit at an odd offset), widens f16 by table and bf16 by a shift into a Uint32Array view:
 * no DataView call and no allocation per element (bench/RESULTS.md, "7B q4 under 4.2 GB").
 */
export function decodeToF32(bytes: Uint8Array, dtype: WeightDType): Float32Array {
  if (dtype === 'f32') {
    const out = new Float32Array(bytes.byteLength / 4);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  const n = bytes.byteLength >>> 1;
  const aligned = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice();
  const h = new Uint16Array(aligned.buffer, aligned.byteOffset, n);
  const out = new Float32Array(n);
  if (dtype === 'f16') {
    const table = f16Table();
    for (let i = 0; i < n; i++) out[i] = table[h[i]!]!;
  } else {
    const o32 = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) o32[i] = h[i]! << 16;
  }
  return out;
}

/** Rounds f32 values into raw little-endian bytes of `dtype` (tests, synthetic checkpoints). */
export function encodeFromF32(values: Float32Array, dtype: WeightDType): Uint8Array {
  if (dtype === 'f32') return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  const out = new Uint16Array(values.length);
  const conv = dtype === 'f16' ? f32ToF16 : f32ToBf16;
  for (let i = 0; i < values.length; i++) out[i] = conv(values[i]!);
  return new Uint8Array(out.buffer);
}
