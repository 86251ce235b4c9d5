/**
 * Random weight matrices for the kernel tests (matmul, swiglu, embedding).
 */
import type { Gpu } from '../../gpu/device.ts';
import { allocateMatrix, uploadMatrix, writeBuffer, type QuantFormat, type WeightDType } from '../../gpu/buffers.ts';
import { dequantizeRows, partBytes, quantizeRows } from '../quant.ref.ts';
import { decodeToF32, encodeFromF32 } from '../../util/half.ts';
import type { Rng } from '../../util/rng.ts';
import { randomNormal } from '../../util/testing.ts';

/**
 * Random raw weights of `dtype`. 16-bit values are drawn as random bit patterns with
 * magnitudes in [2^-5, 4): fast for the large real shapes, and every value exact.
 */
export function randomWeights(rng: Rng, n: number, dtype: WeightDType): Uint8Array {
  if (dtype === 'f32') return encodeFromF32(randomNormal(rng, n), 'f32');
  const bits = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    const r = rng.nextU32();
    const sign = (r >>> 31) << 15;
    if (dtype === 'f16') bits[i] = sign | ((10 + (r % 7)) << 10) | ((r >>> 8) & 0x3ff); // exponent 2^-5 .. 2^1
    else bits[i] = sign | ((122 + (r % 7)) << 7) | ((r >>> 8) & 0x7f);
  }
  return new Uint8Array(bits.buffer);
}

/** Uploads random weights; returns the device matrix and the same values widened to f32. */
export function randomMatrix(gpu: Gpu, rng: Rng, rows: number, cols: number, dtype: WeightDType, maxPartBytes?: number) {
  const raw = randomWeights(rng, rows * cols, dtype);
  const matrix = uploadMatrix(gpu, raw, rows, cols, dtype, 'w', maxPartBytes);
  return { matrix, values: decodeToF32(raw, dtype) };
}


/**
 * Random N(0, 1) weights quantized to `format` and uploaded part by part; returns the device
 * matrix and the weights its codes stand for (dequantized plainly), which the kernels must use.
 */
export function randomQuantMatrix(gpu: Gpu, rng: Rng, rows: number, cols: number, format: QuantFormat, maxPartBytes?: number) {
  const qr = quantizeRows(randomNormal(rng, rows * cols), rows, cols, format);
  const matrix = allocateMatrix(gpu, rows, cols, format, 'w', maxPartBytes);
  for (const p of matrix.parts) writeBuffer(gpu, p.buffer, partBytes(qr, p.row0, p.rows, format, cols));
  return { matrix, values: dequantizeRows(qr, rows, cols, format) };
}
