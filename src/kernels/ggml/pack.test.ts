/**
 * pack.ts: for every GGUF type, the device bytes packGgmlRows writes (a tensor streamed in runs
 * of rows into a split matrix, as the loader writes it) decode to dequantize()'s weights bit
 * for bit: through a plain-TypeScript mirror of the device layout (device.testing.ts) for the
 * block formats, through quant.ref.ts for q8/q4, and as the raw rows for F32/F16/BF16. Also
 * the device sizes against the file's.
 */
import { describe, expect, it } from 'vitest';
import { GGML_UNITS, isGgmlBlocks, matrixRowBytes, quantLayout } from '../../gpu/buffers.ts';
import { decodeToF32 } from '../../util/half.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed } from '../../util/testing.ts';
import { dequantizeRows } from '../quant.ref.ts';
import { randomBlocks } from './blocks.testing.ts';
import { dequantize } from './dequant.ref.ts';
import { decodeDevicePart } from './device.testing.ts';
import { ggmlDeviceDType, packGgmlRows } from './pack.ts';
import { GGML_TYPES, type GgmlType } from './types.ts';

const TYPES = Object.keys(GGML_TYPES) as GgmlType[];

/** Packs [rows, cols] of `file` into parts of `partRows` rows, in runs of `run` rows; returns each part's bytes. */
function pack(type: GgmlType, file: Uint8Array, rows: number, cols: number, partRows: number, run: number): Uint8Array[] {
  const t = GGML_TYPES[type];
  const fileRowBytes = (cols / t.blockValues) * t.blockBytes;
  const dtype = ggmlDeviceDType(type);
  const parts: Uint8Array[] = [];
  for (let row0 = 0; row0 < rows; row0 += partRows) {
    const n = Math.min(partRows, rows - row0);
    // Poisoned, so a byte no write reaches shows.
    const part = new Uint8Array(n * matrixRowBytes(dtype, cols)).fill(0xa5);
    for (let r = 0; r < n; r += run) {
      const m = Math.min(run, n - r);
      for (const w of packGgmlRows(type, file.subarray((row0 + r) * fileRowBytes, (row0 + r + m) * fileRowBytes), m, cols, r, n)) {
        expect(w.offset + w.data.byteLength).toBeLessThanOrEqual(part.byteLength);
        part.set(w.data, w.offset);
      }
    }
    parts.push(part);
  }
  return parts;
}

/** A part's weights as the device layout of `type` holds them. */
function decodePart(type: GgmlType, part: Uint8Array, rows: number, cols: number): Float32Array {
  const dtype = ggmlDeviceDType(type);
  if (isGgmlBlocks(dtype)) return decodeDevicePart(dtype, part, rows, cols);
  if (dtype === 'q8' || dtype === 'q4') {
    const L = quantLayout(dtype, cols);
    const codes = part.subarray(0, rows * L.codeRowBytes);
    const scales = new Uint16Array(part.buffer.slice(part.byteOffset + rows * L.codeRowBytes, part.byteOffset + part.byteLength));
    return dequantizeRows({ codes, scales }, rows, cols, dtype);
  }
  return decodeToF32(part, dtype);
}

describe('packGgmlRows', () => {
  it.each(TYPES)('%s: packed and decoded as the device reads it = dequantize(), bit for bit, in split parts and runs of rows', (type) => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const t = GGML_TYPES[type];
    // K-quants: 3 super-blocks a row; 32-weight formats: 5 groups (q5_0: an odd block count); floats: 22 columns.
    const cols = t.blockValues === 256 ? 768 : t.blockValues === 32 ? 160 : 22;
    const rows = 23;
    const file = randomBlocks(type, (rows * cols) / t.blockValues, rng);
    const expected = dequantize(type, file, rows * cols);
    const parts = pack(type, file, rows, cols, 10, 4);
    const got = new Float32Array(rows * cols);
    parts.forEach((p, i) => got.set(decodePart(type, p, Math.min(10, rows - 10 * i), cols), 10 * i * cols));
    let mismatches = 0;
    for (let i = 0; i < got.length; i++) if (!Object.is(got[i], expected[i])) mismatches++;
    expect(mismatches, `seed ${seed}, ${type} ${rows}x${cols}`).toBe(0);
  });

  it('device sizes stay within 5% of the file\'s at the 7B shapes', () => {
    for (const type of TYPES) {
      const t = GGML_TYPES[type];
      for (const cols of [4096, 14336]) {
        const file = (cols / t.blockValues) * t.blockBytes;
        const device = matrixRowBytes(ggmlDeviceDType(type), cols);
        expect(device / file, `${type}, ${cols} columns`).toBeLessThanOrEqual(1.05);
      }
    }
    expect(GGML_UNITS.q4_k.unitBytes).toBe(GGML_TYPES.Q4_K.blockBytes);
  });

  it('refuses rows that are not whole blocks, wrong byte counts and rows past the part', () => {
    expect(() => packGgmlRows('Q4_K', new Uint8Array(144), 1, 128, 0, 1)).toThrow(/whole blocks/);
    expect(() => packGgmlRows('Q6_K', new Uint8Array(209), 1, 256, 0, 1)).toThrow(/need 210 bytes/);
    expect(() => packGgmlRows('Q4_0', new Uint8Array(18), 1, 32, 4, 4)).toThrow(/do not fit/);
  });
});
