/**
 * Random ggml blocks for tests: every code pattern of every format is valid, so the codes are
 * random bytes, and only the f16 scale fields are chosen, so that the weights come out about the
 * size of a trained model's. Each block's root mean square is `scale` times a factor drawn from
 * [0.5, 1.5) (rescaled so the whole matrix's RMS is about `scale`); its mean is near zero, the
 * formats with mins centring their codes with them. Kernel and model tests draw whole matrices
 * here, so it costs about one RNG word per 4 bytes plus a few operations per block.
 */
import type { Rng } from '../../util/rng.ts';
import { f16ToF32, f32ToBf16, f32ToF16 } from '../../util/half.ts';
import { kScaleMin, q3KScale } from './dequant.ref.ts';
import { GGML_TYPES, type GgmlType } from './types.ts';

/** Mean and mean square of an integer code uniform on lo..hi (what random bits give). */
function moments(lo: number, hi: number): { mu: number; sq: number } {
  const n = hi - lo + 1;
  const mu = (lo + hi) / 2;
  return { mu, sq: (n * n - 1) / 12 + mu * mu };
}

const JITTER_RMS = Math.sqrt(13 / 12); // RMS of a factor uniform on [0.5, 1.5)

/**
 * `blocks` blocks of `type` (for F32, F16 and BF16: `blocks` values, normal with standard
 * deviation `scale`). The quantized formats' weights have RMS about `scale` (default 0.02);
 * both signs of every scale and min occur. Scales much below 1e-3 make the K-quants' f16
 * super-scales subnormal (valid, but the weights coarse); one too large for f16 throws.
 */
export function randomBlocks(type: GgmlType, blocks: number, rng: Rng, scale = 0.02): Uint8Array {
  if (!Number.isInteger(blocks) || blocks < 0) throw new RangeError(`randomBlocks(${type}): block count ${blocks} is not a whole number`);
  if (!(scale > 0 && Number.isFinite(scale))) throw new RangeError(`randomBlocks(${type}): scale ${scale} is not a positive number`);
  if (type === 'F32' || type === 'F16' || type === 'BF16') return randomFloats(type, blocks, rng, scale);

  const { blockBytes } = GGML_TYPES[type];
  const out = randomBytes(blocks * blockBytes, rng);
  const put = (at: number, value: number) => {
    const h = f32ToF16(value);
    if ((h & 0x7c00) === 0x7c00) throw new RangeError(`randomBlocks(${type}): scale ${scale} needs an f16 block scale past 65504`);
    out[at] = h & 0xff;
    out[at + 1] = h >> 8;
    return f16ToF32(h);
  };
  const sc = new Float64Array(16);
  const mn = new Float64Array(16);

  for (let k = 0; k < blocks; k++) {
    const at = k * blockBytes;
    const target = (scale * (0.5 + rng.next())) / JITTER_RMS;
    // Flipping every scale and min of a block flips its weights: both signs stay centred.
    const sign = rng.nextU32() & 1 ? -1 : 1;
    switch (type) {
      case 'Q8_0': put(at, (sign * target) / Math.sqrt(moments(-128, 127).sq)); break;
      case 'Q4_0': put(at, (sign * target) / Math.sqrt(moments(-8, 7).sq)); break;
      case 'Q5_0': put(at, (sign * target) / Math.sqrt(moments(-16, 15).sq)); break;
      case 'Q4_1': case 'Q5_1': {
        const { mu, sq } = type === 'Q4_1' ? moments(0, 15) : moments(0, 31);
        // w = d * q + m with m near -d * mu: the block's mean is off zero by up to half a code spread.
        const k2 = -mu + 0.5 * Math.sqrt(sq - mu * mu) * (2 * rng.next() - 1);
        const d = put(at, (sign * target) / Math.sqrt(sq + 2 * k2 * mu + k2 * k2));
        put(at + 2, d * k2);
        break;
      }
      case 'Q2_K': {
        for (let s = 0; s < 16; s++) {
          sc[s] = out[at + s]! & 0xf;
          mn[s] = out[at + s]! >> 4;
        }
        putWithMins(put, at + 80, at + 82, sc, mn, 16, moments(0, 3), sign * target);
        break;
      }
      case 'Q4_K': case 'Q5_K': {
        for (let s = 0; s < 8; s++) {
          const sm = kScaleMin(out, at + 4, s);
          sc[s] = sm & 0xff;
          mn[s] = sm >> 8;
        }
        putWithMins(put, at, at + 2, sc, mn, 8, type === 'Q4_K' ? moments(0, 15) : moments(0, 31), sign * target);
        break;
      }
      case 'Q3_K': {
        let ss = 0;
        for (let s = 0; s < 16; s++) ss += (q3KScale(out, at, s) - 32) ** 2;
        put(at + 108, (sign * target) / Math.sqrt(Math.max(ss / 16, 1e-30) * moments(-4, 3).sq));
        break;
      }
      case 'Q6_K': {
        let ss = 0;
        for (let s = 0; s < 16; s++) ss += ((out[at + 192 + s]! << 24) >> 24) ** 2;
        put(at + 208, (sign * target) / Math.sqrt(Math.max(ss / 16, 1e-30) * moments(-32, 31).sq));
        break;
      }
    }
  }
  return out;
}

/**
 * A K-quant's d and dmin for sub-block scales sc and mins mn (w = d * sc * q - dmin * mn):
 * dmin / d centres the block (its mins cancel the codes' mean mu on the whole), d gives the
 * block mean square target^2. A block whose scales are all zero is all zeros whatever d is.
 */
function putWithMins(
  put: (at: number, v: number) => number, dAt: number, dminAt: number,
  sc: Float64Array, mn: Float64Array, n: number, { mu, sq }: { mu: number; sq: number }, target: number,
): void {
  let sumSc = 0;
  let sumMn = 0;
  for (let s = 0; s < n; s++) {
    sumSc += sc[s]!;
    sumMn += mn[s]!;
  }
  const r = sumMn > 0 ? (mu * sumSc) / sumMn : 0;
  let ms = 0;
  for (let s = 0; s < n; s++) ms += sc[s]! * sc[s]! * sq - 2 * sc[s]! * r * mn[s]! * mu + r * r * mn[s]! * mn[s]!;
  ms /= n;
  const d = put(dAt, ms > 0 ? target / Math.sqrt(ms) : target);
  put(dminAt, d * r);
}

/** n random bytes, four from each RNG word. */
function randomBytes(n: number, rng: Rng): Uint8Array {
  const out = new Uint8Array(n);
  const words = new Uint32Array(out.buffer, 0, n >>> 2);
  for (let i = 0; i < words.length; i++) words[i] = rng.nextU32();
  for (let i = words.length * 4; i < n; i++) out[i] = rng.nextU32() & 0xff;
  return out;
}

/** n normal values (Marsaglia's polar method: no trigonometry, both outputs of each pair) stored as `type`. */
function randomFloats(type: 'F32' | 'F16' | 'BF16', n: number, rng: Rng, scale: number): Uint8Array {
  const values = new Float32Array(n);
  const toUnit = 2 / 4294967296;
  for (let i = 0; i < n; i += 2) {
    let x: number;
    let y: number;
    let s: number;
    do {
      x = rng.nextU32() * toUnit - 1;
      y = rng.nextU32() * toUnit - 1;
      s = x * x + y * y;
    } while (s >= 1 || s === 0);
    const f = scale * Math.sqrt((-2 * Math.log(s)) / s);
    values[i] = x * f;
    if (i + 1 < n) values[i + 1] = y * f;
  }
  if (type === 'F32') return new Uint8Array(values.buffer);
  const out = new Uint16Array(n);
  const encode = type === 'F16' ? f32ToF16 : f32ToBf16;
  for (let i = 0; i < n; i++) out[i] = encode(values[i]!);
  return new Uint8Array(out.buffer);
}
