/**
 * ggml's block formats, dequantized on the CPU: the reference the GGUF kernels are checked
 * against, written to be read. Every layout below is llama.cpp's (ggml-common.h's block structs,
 * all fields little-endian, blocks packed back to back with no padding) and every formula is
 * ggml-quants.c's dequantize_row_*, down to the order of its f32 operations: each product and
 * difference is rounded to f32 where C rounds it (Math.fround), so the values equal llama.cpp's
 * gguf-py (and ggml's C) bit for bit. dequant.test.ts pins that against fixtures made by
 * golden/ggml_blocks.py from real llama-quantize output and from random blocks.
 *
 * Notation: d, dmin, m are ggml_half (f16) fields widened exactly to f32; q is a weight's integer
 * code; "sub-block" is the group of weights that shares one small scale. A K-quant's block is a
 * super-block of QK_K = 256 weights.
 *
 * Exact f32 here: JS computes in f64, and one f64 operation on f32 operands rounded once more to
 * f32 gives the correctly rounded f32 result for + - * (f64 has more than 2 * 24 + 2 bits), so
 * `fround(a * b)` is C's `a * b` in float. In fact every product below is exact in f32: an f16
 * scale has at most 11 significant bits, a sub-block scale at most 7 (Q6_K's int8; 6 or fewer
 * elsewhere) and a code at most 7 (Q8_0, which has no sub-block scale; 5 or fewer elsewhere), so
 * d * sc * q needs at most 23 bits whichever way it associates, and no f16 scale is small enough
 * to make an f32 subnormal.
 * The one rounding that matters is the final add of the min (Q4_1, Q5_1 and the K-quants' minus
 * dmin * mn), and an fma there (a GPU compiler may fuse `d1 * q - m1`) rounds the same, as its
 * product is exact. The frounds stay: they say where C's float arithmetic rounds.
 */
import { GGML_TYPES, ggmlBytes, type GgmlType } from './types.ts';

const fround = Math.fround;

/** f16 bits -> f32 bits, exact, NaN payloads kept (numpy's conversion, which gguf-py uses). */
function halfBitsToFloatBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal half: normalize into an f32 exponent.
  let e = 113;
  while ((mant & 0x400) === 0) {
    mant <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((mant & 0x3ff) << 13)) >>> 0;
}

/** Every half widened, as f32 bits and as values: one load per f16 field. */
const HALF_BITS = new Uint32Array(0x10000);
for (let h = 0; h < 0x10000; h++) HALF_BITS[h] = halfBitsToFloatBits(h);
const HALF = new Float32Array(HALF_BITS.buffer);

/** The f16 field at byte `at`, as f32. */
function half(b: Uint8Array, at: number): number {
  return HALF[b[at]! | (b[at + 1]! << 8)]!;
}

function int8(byte: number): number {
  return (byte << 24) >> 24;
}

/** Decodes block `block` of `b` (its bytes at block * blockBytes) into out[o .. o + blockValues). */
type BlockDecoder = (b: Uint8Array, at: number, out: Float32Array, o: number) => void;

/*
 * Q8_0: 32 weights, 34 bytes.
 *   d: f16 @0 | qs: int8[32] @2
 *   w[j] = qs[j] * d
 */
const q8_0: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at);
  for (let j = 0; j < 32; j++) y[o + j] = fround(int8(b[at + 2 + j]!) * d);
};

/*
 * Q4_0: 32 weights, 18 bytes.
 *   d: f16 @0 | qs: u8[16] @2, byte j holding weight j (low nibble) and weight j + 16 (high)
 *   w = (nibble - 8) * d
 */
const q4_0: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at);
  for (let j = 0; j < 16; j++) {
    const byte = b[at + 2 + j]!;
    y[o + j] = fround(((byte & 0xf) - 8) * d);
    y[o + j + 16] = fround(((byte >> 4) - 8) * d);
  }
};

/*
 * Q4_1: 32 weights, 20 bytes.
 *   d: f16 @0 | m: f16 @2 | qs: u8[16] @4 (nibbles as Q4_0)
 *   w = nibble * d + m       (m is the block's minimum: added, not subtracted)
 */
const q4_1: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at);
  const m = half(b, at + 2);
  for (let j = 0; j < 16; j++) {
    const byte = b[at + 4 + j]!;
    y[o + j] = fround(fround((byte & 0xf) * d) + m);
    y[o + j + 16] = fround(fround((byte >> 4) * d) + m);
  }
};

/** Q5's fifth bits: a little-endian u32 whose bit i belongs to weight i. */
function u32At(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

/*
 * Q5_0: 32 weights, 22 bytes.
 *   d: f16 @0 | qh: u32 @2 (bit i = weight i's fifth bit) | qs: u8[16] @6 (low nibbles as Q4_0)
 *   w = ((nibble | fifth bit << 4) - 16) * d
 */
const q5_0: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at);
  const qh = u32At(b, at + 2);
  for (let j = 0; j < 16; j++) {
    const byte = b[at + 6 + j]!;
    const lo = (byte & 0xf) | (((qh >>> j) & 1) << 4);
    const hi = (byte >> 4) | (((qh >>> (j + 16)) & 1) << 4);
    y[o + j] = fround((lo - 16) * d);
    y[o + j + 16] = fround((hi - 16) * d);
  }
};

/*
 * Q5_1: 32 weights, 24 bytes.
 *   d: f16 @0 | m: f16 @2 | qh: u32 @4 | qs: u8[16] @8
 *   w = (nibble | fifth bit << 4) * d + m
 */
const q5_1: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at);
  const m = half(b, at + 2);
  const qh = u32At(b, at + 4);
  for (let j = 0; j < 16; j++) {
    const byte = b[at + 8 + j]!;
    const lo = (byte & 0xf) | (((qh >>> j) & 1) << 4);
    const hi = (byte >> 4) | (((qh >>> (j + 16)) & 1) << 4);
    y[o + j] = fround(fround(lo * d) + m);
    y[o + j + 16] = fround(fround(hi * d) + m);
  }
};

/*
 * Q2_K: 256 weights in 16 sub-blocks of 16, 84 bytes.
 *   scales: u8[16] @0 (sub-block s: scale sc = low nibble, min mn = high nibble)
 *   qs: u8[64] @16 | d: f16 @80 | dmin: f16 @82
 *   dl = d * sc, ml = dmin * mn (each rounded to f32), w = dl * q - ml,  q in 0..3
 * Order of the 2-bit codes: each half of the block (128 weights) reads 32 bytes qs[32h ..];
 * its 4 groups of 32 weights take bit pairs 0-1, 2-3, 4-5, 6-7 of those bytes, the first 16
 * weights of a group from bytes 0..15 and the next 16 from bytes 16..31 (two sub-blocks).
 */
const q2_K: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at + 80);
  const dmin = half(b, at + 82);
  let s = 0;
  for (let h = 0; h < 2; h++) {
    const q = at + 16 + 32 * h;
    for (let shift = 0; shift < 8; shift += 2) {
      for (let part = 0; part < 2; part++, s++) {
        const sc = b[at + s]!;
        const dl = fround(d * (sc & 0xf));
        const ml = fround(dmin * (sc >> 4));
        for (let l = 0; l < 16; l++) y[o++] = fround(fround(dl * ((b[q + 16 * part + l]! >> shift) & 3)) - ml);
      }
    }
  }
};

/**
 * Q3_K's 6-bit scale of sub-block j (0..15), as stored (0..63; the weight uses it minus 32):
 * the low 4 bits are nibbles of bytes 0..7 (low nibbles for j < 8, high for j >= 8), the high
 * 2 bits are bit pair j / 4 of byte 8 + j % 4. `at` is the block's first byte.
 */
export function q3KScale(b: Uint8Array, at: number, j: number): number {
  const s = at + 96;
  const low = j < 8 ? b[s + j]! & 0xf : b[s + j - 8]! >> 4;
  const high = (b[s + 8 + (j & 3)]! >> (2 * (j >> 2))) & 3;
  return low | (high << 4);
}

/*
 * Q3_K: 256 weights in 16 sub-blocks of 16, 110 bytes.
 *   hmask: u8[32] @0 | qs: u8[64] @32 | scales: 12 bytes @96 (16 6-bit scales, q3KScale) | d: f16 @108
 *   dl = d * (scale - 32), w = dl * q,  q = low 2 bits - (high bit set ? 0 : 4), so q in -4..3
 * The 2-bit codes are ordered as Q2_K's. The high bits: weight i of the block takes bit
 * 4 * (i / 128) + (i / 32) % 4 of hmask byte i % 32 (one bit plane per group of 32 weights).
 * A set bit means no offset: llama.cpp stores the complement of the "minus 4" flag.
 */
const q3_K: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at + 108);
  let s = 0;
  let bit = 1;
  for (let h = 0; h < 2; h++) {
    const q = at + 32 + 32 * h;
    for (let shift = 0; shift < 8; shift += 2, bit <<= 1) {
      for (let part = 0; part < 2; part++, s++) {
        const dl = fround(d * (q3KScale(b, at, s) - 32));
        for (let l = 0; l < 16; l++) {
          const k = 16 * part + l;
          const code = ((b[q + k]! >> shift) & 3) - (b[at + k]! & bit ? 0 : 4);
          y[o++] = fround(dl * code);
        }
      }
    }
  }
};

/**
 * Q4_K's and Q5_K's packed 6-bit scale and min of sub-block j (0..7), ggml's get_scale_min_k4,
 * from the 12 scale bytes at `s`:
 *   j < 4:  sc = bytes[j] & 63,                             mn = bytes[j + 4] & 63
 *   j >= 4: sc = bytes[j + 4] & 15 | (bytes[j - 4] >> 6) << 4, mn = bytes[j + 4] >> 4 | (bytes[j] >> 6) << 4
 * (bytes 8..11 hold the low 4 bits of sub-blocks 4..7; their high 2 bits ride in the top bits of
 * bytes 0..7.) Returns sc | mn << 8.
 */
export function kScaleMin(b: Uint8Array, s: number, j: number): number {
  if (j < 4) return (b[s + j]! & 63) | ((b[s + j + 4]! & 63) << 8);
  const sc = (b[s + j + 4]! & 0xf) | ((b[s + j - 4]! >> 6) << 4);
  const mn = (b[s + j + 4]! >> 4) | ((b[s + j]! >> 6) << 4);
  return sc | (mn << 8);
}

/*
 * Q4_K: 256 weights in 8 sub-blocks of 32, 144 bytes.
 *   d: f16 @0 | dmin: f16 @2 | scales: 12 bytes @4 (8 6-bit scales sc, 8 6-bit mins mn, kScaleMin)
 *   qs: u8[128] @16
 *   d1 = d * sc, m1 = dmin * mn (each rounded to f32), w = d1 * q - m1,  q in 0..15
 * Each 64 weights read 32 bytes: the first 32 weights (sub-block 2c) their low nibbles, the next
 * 32 (sub-block 2c + 1) their high nibbles.
 */
const q4_K: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at);
  const dmin = half(b, at + 2);
  for (let c = 0; c < 4; c++) {
    const q = at + 16 + 32 * c;
    const sm1 = kScaleMin(b, at + 4, 2 * c);
    const sm2 = kScaleMin(b, at + 4, 2 * c + 1);
    const d1 = fround(d * (sm1 & 0xff));
    const m1 = fround(dmin * (sm1 >> 8));
    const d2 = fround(d * (sm2 & 0xff));
    const m2 = fround(dmin * (sm2 >> 8));
    for (let l = 0; l < 32; l++) y[o + l] = fround(fround(d1 * (b[q + l]! & 0xf)) - m1);
    for (let l = 0; l < 32; l++) y[o + 32 + l] = fround(fround(d2 * (b[q + l]! >> 4)) - m2);
    o += 64;
  }
};

/*
 * Q5_K: 256 weights in 8 sub-blocks of 32, 176 bytes.
 *   d: f16 @0 | dmin: f16 @2 | scales: 12 bytes @4 (as Q4_K) | qh: u8[32] @16 | qs: u8[128] @48
 *   d1 = d * sc, m1 = dmin * mn, w = d1 * q - m1,  q = nibble (as Q4_K) + 16 * fifth bit, 0..31
 * Sub-block k's fifth bits are bit k of qh[0..31] (weight l of the sub-block: byte l).
 */
const q5_K: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at);
  const dmin = half(b, at + 2);
  for (let c = 0; c < 4; c++) {
    const q = at + 48 + 32 * c;
    const sm1 = kScaleMin(b, at + 4, 2 * c);
    const sm2 = kScaleMin(b, at + 4, 2 * c + 1);
    const d1 = fround(d * (sm1 & 0xff));
    const m1 = fround(dmin * (sm1 >> 8));
    const d2 = fround(d * (sm2 & 0xff));
    const m2 = fround(dmin * (sm2 >> 8));
    for (let l = 0; l < 32; l++) {
      const qh = b[at + 16 + l]!;
      y[o + l] = fround(fround(d1 * ((b[q + l]! & 0xf) + ((qh >> (2 * c)) & 1) * 16)) - m1);
      y[o + 32 + l] = fround(fround(d2 * ((b[q + l]! >> 4) + ((qh >> (2 * c + 1)) & 1) * 16)) - m2);
    }
    o += 64;
  }
};

/*
 * Q6_K: 256 weights in 16 sub-blocks of 16, 210 bytes.
 *   ql: u8[128] @0 (low 4 bits) | qh: u8[64] @128 (high 2 bits) | scales: int8[16] @192 | d: f16 @208
 *   w = (d * sc) * q, in that order (as C's `d * sc[is] * q`),  q = (low | high << 4) - 32, -32..31
 * Each half h of the block (128 weights) reads ql[64h ..] and qh[32h ..]. Its weight 32g + l
 * (g = 0..3, l = 0..31) takes, from ql, g = 0: ql[l]'s low nibble, 1: ql[l + 32]'s low, 2: ql[l]'s
 * high, 3: ql[l + 32]'s high; from qh, bit pair g of qh[l]; its scale is scales[8h + 2g + l / 16].
 */
const q6_K: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at + 208);
  for (let h = 0; h < 2; h++) {
    const ql = at + 64 * h;
    const qh = at + 128 + 32 * h;
    const sc = at + 192 + 8 * h;
    for (let l = 0; l < 32; l++) {
      const is = l >> 4;
      const high = b[qh + l]!;
      const q1 = ((b[ql + l]! & 0xf) | ((high & 3) << 4)) - 32;
      const q2 = ((b[ql + l + 32]! & 0xf) | (((high >> 2) & 3) << 4)) - 32;
      const q3 = ((b[ql + l]! >> 4) | (((high >> 4) & 3) << 4)) - 32;
      const q4 = ((b[ql + l + 32]! >> 4) | (((high >> 6) & 3) << 4)) - 32;
      y[o + l] = fround(fround(d * int8(b[sc + is]!)) * q1);
      y[o + l + 32] = fround(fround(d * int8(b[sc + is + 2]!)) * q2);
      y[o + l + 64] = fround(fround(d * int8(b[sc + is + 4]!)) * q3);
      y[o + l + 96] = fround(fround(d * int8(b[sc + is + 6]!)) * q4);
    }
    o += 128;
  }
};

const DECODERS: Readonly<Record<Exclude<GgmlType, 'F32' | 'F16' | 'BF16'>, BlockDecoder>> = {
  Q8_0: q8_0, Q4_0: q4_0, Q4_1: q4_1, Q5_0: q5_0, Q5_1: q5_1,
  Q2_K: q2_K, Q3_K: q3_K, Q4_K: q4_K, Q5_K: q5_K, Q6_K: q6_K,
};

/**
 * The first `count` weights stored in `bytes` as ggml type `type`, as f32 (count a multiple of
 * the type's block; `bytes` may run on past them). F32, F16 and BF16 are copied or widened
 * bit-exactly (NaN payloads kept, as numpy does; ggml's C on x86 quiets f16 signaling NaNs).
 */
export function dequantize(type: GgmlType, bytes: Uint8Array, count: number): Float32Array {
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`${type}: weight count ${count} is not a whole number`);
  const need = ggmlBytes(type, count);
  if (bytes.length < need) throw new RangeError(`${type}: ${count} weights need ${need} bytes, got ${bytes.length}`);
  const out = new Float32Array(count);
  if (type === 'F32') {
    new Uint8Array(out.buffer).set(bytes.subarray(0, need));
    return out;
  }
  if (type === 'F16' || type === 'BF16') {
    // Bits, not values: a NaN loaded into a JS number may lose its payload.
    const o32 = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) {
      const h = bytes[2 * i]! | (bytes[2 * i + 1]! << 8);
      o32[i] = type === 'F16' ? HALF_BITS[h]! : h << 16;
    }
    return out;
  }
  const { blockValues, blockBytes } = GGML_TYPES[type];
  const decode = DECODERS[type];
  for (let k = 0; k < count / blockValues; k++) decode(bytes, k * blockBytes, out, k * blockValues);
  return out;
}

/**
 * One block's sub-block scales in f32, for kernel writers: for weight i of the block, with
 * s = floor(i / subBlock) and q = blockCodes(...)[i],
 *     w = fround(scale[s] * q)              when bias is null,
 *     w = fround(fround(scale[s] * q) + bias[s])  otherwise,
 * exactly dequantize's value. bias is Q4_1's and Q5_1's m, and minus the K-quants' dmin * mn
 * (a - b and a + (-b) are the same f32 operation). scale is d for the 32-weight formats and
 * the already-rounded d * sc for the K-quants.
 */
export interface BlockScales {
  subBlock: number;
  scale: Float32Array;
  bias: Float32Array | null;
}

/** Block `block` of `bytes` (a block format): its sub-block scales and biases, as BlockScales says. */
export function blockScales(type: GgmlType, bytes: Uint8Array, block: number): BlockScales {
  const { blockBytes } = quantInfo(type, bytes, block);
  const at = block * blockBytes;
  const one = (v: number) => Float32Array.of(v);
  switch (type) {
    case 'Q8_0': case 'Q4_0': case 'Q5_0':
      return { subBlock: 32, scale: one(half(bytes, at)), bias: null };
    case 'Q4_1': case 'Q5_1':
      return { subBlock: 32, scale: one(half(bytes, at)), bias: one(half(bytes, at + 2)) };
    case 'Q2_K': {
      const d = half(bytes, at + 80);
      const dmin = half(bytes, at + 82);
      const scale = new Float32Array(16);
      const bias = new Float32Array(16);
      for (let s = 0; s < 16; s++) {
        scale[s] = d * (bytes[at + s]! & 0xf);
        bias[s] = -fround(dmin * (bytes[at + s]! >> 4));
      }
      return { subBlock: 16, scale, bias };
    }
    case 'Q3_K': {
      const d = half(bytes, at + 108);
      const scale = new Float32Array(16);
      for (let s = 0; s < 16; s++) scale[s] = d * (q3KScale(bytes, at, s) - 32);
      return { subBlock: 16, scale, bias: null };
    }
    case 'Q4_K': case 'Q5_K': {
      const d = half(bytes, at);
      const dmin = half(bytes, at + 2);
      const scale = new Float32Array(8);
      const bias = new Float32Array(8);
      for (let s = 0; s < 8; s++) {
        const sm = kScaleMin(bytes, at + 4, s);
        scale[s] = d * (sm & 0xff);
        bias[s] = -fround(dmin * (sm >> 8));
      }
      return { subBlock: 32, scale, bias };
    }
    case 'Q6_K': {
      const d = half(bytes, at + 208);
      const scale = new Float32Array(16);
      for (let s = 0; s < 16; s++) scale[s] = d * int8(bytes[at + 192 + s]!);
      return { subBlock: 16, scale, bias: null };
    }
    default:
      throw new RangeError(`${type} has no blocks`);
  }
}

/**
 * One block's integer codes q in weight order, as blockScales' formula uses them: Q8_0 -128..127,
 * Q4_0 -8..7, Q4_1 0..15, Q5_0 -16..15, Q5_1 0..31, Q2_K 0..3, Q3_K -4..3, Q4_K 0..15,
 * Q5_K 0..31, Q6_K -32..31.
 */
export function blockCodes(type: GgmlType, bytes: Uint8Array, block: number): Int8Array {
  const { blockValues, blockBytes } = quantInfo(type, bytes, block);
  const at = block * blockBytes;
  // The codes are what dequantize computes with every scale 1 and bias 0: decode a copy so.
  const copy = bytes.slice(at, at + blockBytes);
  const setHalf = (off: number, h: number) => {
    copy[off] = h & 0xff;
    copy[off + 1] = h >> 8;
  };
  const ONE = 0x3c00;
  switch (type) {
    case 'Q4_1': case 'Q5_1': setHalf(0, ONE); setHalf(2, 0); break;
    case 'Q2_K':
      setHalf(80, ONE);
      setHalf(82, 0);
      for (let s = 0; s < 16; s++) copy[s] = 1;
      break;
    case 'Q3_K':
      setHalf(108, ONE);
      // Every 6-bit scale 33 (so scale - 32 = 1): low nibbles 1, high bit pairs 2.
      for (let j = 0; j < 8; j++) copy[96 + j] = 0x11;
      for (let j = 8; j < 12; j++) copy[96 + j] = 0xaa;
      break;
    case 'Q4_K': case 'Q5_K':
      setHalf(0, ONE);
      setHalf(2, 0);
      // Every sc 1 and every mn 0.
      for (let j = 0; j < 4; j++) copy[4 + j] = 1;
      for (let j = 4; j < 8; j++) copy[4 + j] = 0;
      for (let j = 8; j < 12; j++) copy[4 + j] = 1;
      break;
    case 'Q6_K':
      setHalf(208, ONE);
      for (let s = 0; s < 16; s++) copy[192 + s] = 1;
      break;
    default: setHalf(0, ONE);
  }
  const values = new Float32Array(blockValues);
  DECODERS[type as keyof typeof DECODERS](copy, 0, values, 0);
  return Int8Array.from(values);
}

function quantInfo(type: GgmlType, bytes: Uint8Array, block: number) {
  const t = GGML_TYPES[type];
  if (t.blockValues === 1) throw new RangeError(`${type} is not a block format`);
  if (!Number.isInteger(block) || block < 0 || (block + 1) * t.blockBytes > bytes.length) {
    throw new RangeError(`${type}: block ${block} is past the ${bytes.length} bytes given`);
  }
  return t;
}
