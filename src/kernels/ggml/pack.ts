/**
 * GGUF tensors on the device: which MatrixDType each ggml type becomes, and the writes that put
 * a run of a tensor's rows, as the file stores them, into a matrix part (allocateMatrix's).
 * The kernels that read the block formats: ./ggml.wgsl and the per-format decode files beside it.
 *
 * Device layouts, and why:
 *   F32, F16, BF16 -> f32, f16, bf16: the rows as stored (row-major, little-endian).
 *   Q8_0 -> q8, Q4_0 -> q4: the same math as the project's own formats (w = c d, w = (c - 8) d,
 *     groups of 32, an f16 scale), so the blocks are re-packed losslessly into quant.ref.ts's
 *     two planes and every q8/q4 kernel reads them unchanged. Q4_0's nibbles move: the file
 *     keeps weight j in byte j's low nibble and weight j + 16 in its high one, q4 weights 8w + b
 *     and 8w + b + 4 in byte b of word w.
 *   Q4_K: each block as the file stores it but for its codes, which move into q4's group order
 *     (q4kGroupOrder: a group's 16 bytes in one vec4, so its decode product reads and sums a
 *     group as qmatvec_rows does; measured in bench/RESULTS.md, "Q4_K in q4's group order").
 *   The other block formats (q5_k, q4_1, q5_1, q2_k, q3_k): each block as the file
 *     stores it, padded to a 4-byte multiple (q3_k 110 -> 112 bytes; the others are already),
 *     the blocks of a row one after another and each row padded to 16 bytes (GGML_UNITS,
 *     ggmlRowBytes in src/gpu/buffers.ts). Every field of these blocks then starts on a 32-bit
 *     word (f16 pairs and byte runs of multiples of 4), so a kernel reads words, never
 *     straddling ones, and the decode is the file's own bit layout: one source of truth with
 *     llama.cpp, nothing to re-derive. q4_k (144 bytes), q5_k (176) and q3_k (112) blocks are
 *     whole vec4 words, so the decode kernels load them 16 bytes at a time: on lavapipe a load
 *     costs per instruction and lane, so a vec4 load is a quarter of four word loads (q6_k as
 *     stored, 212-byte blocks read word by word, decoded 1.3x slower than in the layout below).
 *   Q6_K (210 bytes: ql 128, qh 64, scales 16, then d f16): the first 208 bytes of each block
 *     stay as they are, 13 vec4 words, and the blocks' d go after the row's blocks as a tail of
 *     f16 (so the row is the file's bytes, reordered, plus its 16-byte padding).
 *   Q5_0 (22-byte blocks, d f16 + qh u32 + 16 bytes of codes): padding each block to 24 bytes
 *     would add 9%, so blocks go in pairs as one 44-byte unit: [d0, d1] [qh0] [qh1] [qs0] [qs1]
 *     (11 words; a row of an odd number of blocks ends in a half-empty unit).
 *   Sizes: q3_k +1.8%, the others as the file, plus < 16 bytes per row.
 */
import { GGML_UNITS, ggmlRowBytes, isGgmlBlocks, matrixRowBytes, quantLayout, type MatrixDType } from '../../gpu/buffers.ts';
import { GGML_TYPES, type GgmlType } from './types.ts';

const DTYPES: Readonly<Record<GgmlType, MatrixDType>> = {
  F32: 'f32', F16: 'f16', BF16: 'bf16', Q8_0: 'q8', Q4_0: 'q4',
  Q4_K: 'q4_k', Q6_K: 'q6_k', Q5_K: 'q5_k', Q5_0: 'q5_0', Q4_1: 'q4_1', Q5_1: 'q5_1', Q2_K: 'q2_k', Q3_K: 'q3_k',
};

/** The device dtype a tensor of ggml type `type` is stored as. */
export function ggmlDeviceDType(type: GgmlType): MatrixDType {
  return DTYPES[type];
}

/** One write into a part's buffer: bytes at a byte offset. */
export interface PartWrite {
  offset: number;
  data: Uint8Array;
}

/**
 * The writes that put `n` consecutive rows of a [*, cols] tensor of type `type`, as the GGUF file
 * stores them (`fileRows`: n * cols / blockValues * blockBytes bytes), at rows r .. r + n - 1 of a
 * matrix part of `partRows` rows in the device layout of ggmlDeviceDType(type). The caller writes
 * each (writeBuffer); writes of one call never overlap, calls for disjoint rows neither.
 */
export function packGgmlRows(type: GgmlType, fileRows: Uint8Array, n: number, cols: number, r: number, partRows: number): PartWrite[] {
  const t = GGML_TYPES[type];
  if (cols % t.blockValues !== 0) throw new RangeError(`${type}: a row of ${cols} weights is not whole blocks of ${t.blockValues}`);
  const fileRowBytes = (cols / t.blockValues) * t.blockBytes;
  if (fileRows.byteLength !== n * fileRowBytes) throw new RangeError(`${type}: ${n} rows of ${cols} need ${n * fileRowBytes} bytes, got ${fileRows.byteLength}`);
  if (!Number.isInteger(r) || r < 0 || r + n > partRows) throw new RangeError(`${type}: rows ${r}..${r + n} do not fit a part of ${partRows} rows`);
  if (n === 0) return [];
  const dtype = ggmlDeviceDType(type);
  if (dtype === 'q8' || dtype === 'q4') return packQuant(dtype, fileRows, n, cols, r, partRows);
  if (!isGgmlBlocks(dtype)) return [{ offset: r * matrixRowBytes(dtype, cols), data: fileRows }];
  const rowBytes = ggmlRowBytes(dtype, cols);
  const unit = GGML_UNITS[dtype];
  const blocks = cols / t.blockValues;
  // Blocks stored whole and rows already 16-byte multiples: the file's bytes are the device's.
  if (dtype !== 'q4_k' && unit.unitBytes === t.blockBytes && unit.tailBytes === 0 && rowBytes === fileRowBytes) return [{ offset: r * rowBytes, data: fileRows }];
  const out = new Uint8Array(n * rowBytes);
  for (let i = 0; i < n; i++) {
    const src = i * fileRowBytes;
    const dst = i * rowBytes;
    if (dtype === 'q6_k') {
      for (let b = 0; b < blocks; b++) {
        const at = src + b * t.blockBytes;
        out.set(fileRows.subarray(at, at + 208), dst + b * 208);
        out[dst + blocks * 208 + 2 * b] = fileRows[at + 208]!;
        out[dst + blocks * 208 + 2 * b + 1] = fileRows[at + 209]!;
      }
    } else if (dtype === 'q5_0') {
      for (let b = 0; b < blocks; b++) {
        const at = src + b * t.blockBytes;
        const u = dst + (b >> 1) * unit.unitBytes;
        const odd = b & 1;
        out[u + 2 * odd] = fileRows[at]!;
        out[u + 2 * odd + 1] = fileRows[at + 1]!;
        out.set(fileRows.subarray(at + 2, at + 6), u + 4 + 4 * odd);
        out.set(fileRows.subarray(at + 6, at + 22), u + 12 + 16 * odd);
      }
    } else if (dtype === 'q4_k') {
      out.set(fileRows.subarray(src, src + fileRowBytes), dst);
      q4kGroupOrder(new Uint32Array(out.buffer, dst, fileRowBytes / 4), blocks);
    } else if (unit.unitBytes === t.blockBytes) {
      out.set(fileRows.subarray(src, src + fileRowBytes), dst);
    } else {
      for (let b = 0; b < blocks; b++) out.set(fileRows.subarray(src + b * t.blockBytes, src + (b + 1) * t.blockBytes), dst + b * unit.unitBytes);
    }
  }
  return [{ offset: r * rowBytes, data: out }];
}

/**
 * Q4_K's codes, in place, from the file's order to q4's group order (the other 16 bytes of each
 * block stay). The file keeps 64 weights per 32-byte chunk c: byte l of word j (l < 4) holds weight
 * 64c + 4j + l in its low nibble and 64c + 32 + 4j + l in its high one. The device keeps each group
 * of 32 weights in 16 bytes as q4 does: byte l of word i holds weight 8i + l (low) and 8i + l + 4
 * (high). Four word operations per word: words 2i and 2i + 1 of a chunk make word i of both its groups.
 */
function q4kGroupOrder(words: Uint32Array, blocks: number): void {
  const f = new Uint32Array(8);
  for (let b = 0; b < blocks; b++) {
    for (let c = 0; c < 4; c++) {
      const at = b * 36 + 4 + 8 * c;
      f.set(words.subarray(at, at + 8));
      for (let i = 0; i < 4; i++) {
        const lo = f[2 * i]!;
        const hi = f[2 * i + 1]!;
        words[at + i] = (lo & 0x0f0f0f0f) | ((hi & 0x0f0f0f0f) << 4);
        words[at + 4 + i] = ((lo >>> 4) & 0x0f0f0f0f) | (hi & 0xf0f0f0f0);
      }
    }
  }
}

/** Q8_0 / Q4_0 rows into q8 / q4's planes: the codes at row r of the codes plane, the scales at row r of the scales plane. */
function packQuant(format: 'q8' | 'q4', fileRows: Uint8Array, n: number, cols: number, r: number, partRows: number): PartWrite[] {
  const L = quantLayout(format, cols);
  const blockBytes = format === 'q8' ? 34 : 18;
  const groups = cols / 32;
  const codes = new Uint8Array(n * L.codeRowBytes);
  const scales = new Uint8Array(n * L.scaleRowBytes);
  for (let i = 0; i < n; i++) {
    for (let g = 0; g < groups; g++) {
      const at = (i * groups + g) * blockBytes;
      scales[i * L.scaleRowBytes + 2 * g] = fileRows[at]!;
      scales[i * L.scaleRowBytes + 2 * g + 1] = fileRows[at + 1]!;
      if (format === 'q8') {
        codes.set(fileRows.subarray(at + 2, at + 34), i * L.codeRowBytes + 32 * g);
        continue;
      }
      // File: weight j (j < 16) in byte j's low nibble, weight j + 16 in its high one.
      const q = (j: number) => (j < 16 ? fileRows[at + 2 + j]! & 15 : fileRows[at + 2 + j - 16]! >> 4);
      const base = i * L.codeRowBytes + 16 * g;
      for (let w = 0; w < 4; w++) {
        for (let b = 0; b < 4; b++) codes[base + 4 * w + b] = q(8 * w + b) | (q(8 * w + b + 4) << 4);
      }
    }
  }
  return [
    { offset: r * L.codeRowBytes, data: codes },
    { offset: partRows * L.codeRowBytes + r * L.scaleRowBytes, data: scales },
  ];
}
