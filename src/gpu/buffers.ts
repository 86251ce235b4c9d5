/**
 * Buffers on the device: allocation, upload, read-back, and the weight matrix
 * type that splits tensors too large for one storage binding.
 */
import type { Gpu } from './device.ts';

export const STORAGE = 0x0080 | 0x0004 | 0x0008; // STORAGE | COPY_SRC | COPY_DST

/** How a weight matrix is stored on the device. 16-bit formats are packed two per u32 word. */
export type WeightDType = 'f32' | 'f16' | 'bf16';

export function bytesPerElement(dtype: WeightDType): number {
  return dtype === 'f32' ? 4 : 2;
}

/** Quantized weight formats (the math and the layout: src/kernels/quant.ref.ts). */
export type QuantFormat = 'q8' | 'q4';
export const QUANT_FORMATS: readonly QuantFormat[] = ['q8', 'q4'];
/** Consecutive weights of a row sharing one scale. */
export const QUANT_GROUP = 32;

export interface QuantLayout {
  /** Bytes of codes per row (a multiple of 16). */
  codeRowBytes: number;
  /** f16 scales per row, padded to a multiple of 8 (16 bytes). */
  scalesPerRow: number;
  scaleRowBytes: number;
  /** Both planes' bytes per row. */
  rowBytes: number;
}

export function quantLayout(format: QuantFormat, cols: number): QuantLayout {
  if (cols % QUANT_GROUP !== 0) {
    throw new RangeError(`${format} quantizes rows in groups of ${QUANT_GROUP} weights; a row of ${cols} is not a multiple of ${QUANT_GROUP} (keep this tensor unquantized)`);
  }
  const codeRowBytes = format === 'q8' ? cols : cols / 2;
  const scalesPerRow = Math.ceil(cols / QUANT_GROUP / 8) * 8;
  return { codeRowBytes, scalesPerRow, scaleRowBytes: scalesPerRow * 2, rowBytes: codeRowBytes + scalesPerRow * 2 };
}

/** Bytes of a [rows, cols] matrix in `format` on the device (both planes, padding included). */
export function quantBytes(format: QuantFormat, rows: number, cols: number): number {
  return rows * quantLayout(format, cols).rowBytes;
}

/**
 * llama.cpp's block formats as the device stores them (GGUF files; the device layouts:
 * src/kernels/ggml/pack.ts), named after ggml's types in lower case.
 */
export type GgmlBlockDType = 'q4_k' | 'q6_k' | 'q5_k' | 'q5_0' | 'q4_1' | 'q5_1' | 'q2_k' | 'q3_k';
export const GGML_BLOCK_DTYPES: readonly GgmlBlockDType[] = ['q4_k', 'q6_k', 'q5_k', 'q5_0', 'q4_1', 'q5_1', 'q2_k', 'q3_k'];

/**
 * A block format's device layout (one source: src/kernels/ggml/pack.ts explains it, the WGSL
 * decode files read it): a row is ceil(cols / unitValues) units of unitBytes, then (q6_k) each
 * unit's tailBytes, the row padded to a multiple of 16 bytes. A unit is one file block (padded
 * to a 4-byte multiple; q6_k's without its d, which goes to the tail) or, for q5_0, two.
 */
export const GGML_UNITS: Readonly<Record<GgmlBlockDType, { unitValues: number; unitBytes: number; tailBytes: number }>> = {
  q4_k: { unitValues: 256, unitBytes: 144, tailBytes: 0 },
  q6_k: { unitValues: 256, unitBytes: 208, tailBytes: 2 },
  q5_k: { unitValues: 256, unitBytes: 176, tailBytes: 0 },
  q5_0: { unitValues: 64, unitBytes: 44, tailBytes: 0 },
  q4_1: { unitValues: 32, unitBytes: 20, tailBytes: 0 },
  q5_1: { unitValues: 32, unitBytes: 24, tailBytes: 0 },
  q2_k: { unitValues: 256, unitBytes: 84, tailBytes: 0 },
  q3_k: { unitValues: 256, unitBytes: 112, tailBytes: 0 },
};

export function isGgmlBlocks(dtype: MatrixDType): dtype is GgmlBlockDType {
  return dtype in GGML_UNITS;
}

/** Weights per file block of a block format: cols must be a multiple (256 for the K-quants, 32 else). */
export function ggmlBlockValues(dtype: GgmlBlockDType): number {
  return dtype.endsWith('_k') ? 256 : 32;
}

/** Bytes of one device row of a block-format matrix of `cols` columns. */
export function ggmlRowBytes(dtype: GgmlBlockDType, cols: number): number {
  const block = ggmlBlockValues(dtype);
  if (cols % block !== 0) throw new RangeError(`${dtype} stores rows in blocks of ${block} weights; a row of ${cols} is not a multiple of ${block}`);
  const u = GGML_UNITS[dtype];
  return Math.ceil((Math.ceil(cols / u.unitValues) * (u.unitBytes + u.tailBytes)) / 16) * 16;
}

/** How a weight matrix is stored on the device: as the checkpoint had it, quantized, or in a GGUF block format. */
export type MatrixDType = WeightDType | QuantFormat | GgmlBlockDType;

export function isQuantized(dtype: MatrixDType): dtype is QuantFormat {
  return dtype === 'q8' || dtype === 'q4';
}

/** Bytes of one row of a matrix of `cols` columns on the device (quantized: both planes). */
export function matrixRowBytes(dtype: MatrixDType, cols: number): number {
  if (isGgmlBlocks(dtype)) return ggmlRowBytes(dtype, cols);
  return isQuantized(dtype) ? quantLayout(dtype, cols).rowBytes : cols * bytesPerElement(dtype);
}

/**
 * A row-major weight matrix [rows, cols] (Hugging Face `[out_features, in_features]`).
 * Split by rows into parts that each fit in one storage binding: a 32002 x 4096 f16
 * embedding is 250 MiB, lavapipe binds at most 128 MiB.
 */
export interface GpuMatrix {
  rows: number;
  cols: number;
  dtype: MatrixDType;
  /** One buffer per part; a quantized part holds its rows' codes, then their scales (quantLayout); a block-format part its rows one after another (ggmlRowBytes). */
  parts: { buffer: GPUBuffer; row0: number; rows: number }[];
}

export function createStorageBuffer(gpu: Gpu, bytes: number, label?: string): GPUBuffer {
  // Bindings must be 4-byte multiples; round up so callers can size by element count.
  const size = Math.max(16, Math.ceil(bytes / 16) * 16);
  if (size > gpu.report.limits.maxBufferSize) {
    throw new Error(
      `Buffer '${label ?? 'unnamed'}' needs ${size} bytes, more than this device's maxBufferSize ` +
        `(${gpu.report.limits.maxBufferSize}).`,
    );
  }
  return gpu.device.createBuffer({ size, usage: STORAGE, label });
}

type Typed = Float32Array | Uint32Array | Int32Array | Uint16Array | Uint8Array;

/** Writes `data` at `byteOffset`; pads the tail so the write size is a multiple of 4 as WebGPU requires. */
export function writeBuffer(gpu: Gpu, buffer: GPUBuffer, data: Typed, byteOffset = 0): void {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (bytes.byteLength % 4 === 0) {
    gpu.device.queue.writeBuffer(buffer, byteOffset, bytes);
  } else {
    const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
    padded.set(bytes);
    gpu.device.queue.writeBuffer(buffer, byteOffset, padded);
  }
}

export function uploadF32(gpu: Gpu, data: Float32Array, label?: string): GPUBuffer {
  const buffer = createStorageBuffer(gpu, data.byteLength, label);
  writeBuffer(gpu, buffer, data);
  return buffer;
}

export function uploadU32(gpu: Gpu, data: Uint32Array | Int32Array, label?: string): GPUBuffer {
  const buffer = createStorageBuffer(gpu, data.byteLength, label);
  writeBuffer(gpu, buffer, data);
  return buffer;
}

/** Copies `size` bytes at `offset` back to the CPU. Waits for all work submitted before it. */
export async function readBuffer(gpu: Gpu, buffer: GPUBuffer, offset = 0, size?: number): Promise<ArrayBuffer> {
  const n = size ?? buffer.size - offset;
  const staging = gpu.device.createBuffer({ size: Math.ceil(n / 4) * 4, usage: 0x0001 | 0x0008 }); // MAP_READ | COPY_DST
  const enc = gpu.device.createCommandEncoder();
  enc.copyBufferToBuffer(buffer, offset, staging, 0, Math.ceil(n / 4) * 4);
  gpu.device.queue.submit([enc.finish()]);
  await staging.mapAsync(0x0001);
  const out = staging.getMappedRange().slice(0, n);
  staging.unmap();
  staging.destroy();
  return out;
}

export async function readF32(gpu: Gpu, buffer: GPUBuffer, count: number, offsetElems = 0): Promise<Float32Array> {
  return new Float32Array(await readBuffer(gpu, buffer, offsetElems * 4, count * 4));
}

export async function readU32(gpu: Gpu, buffer: GPUBuffer, count: number, offsetElems = 0): Promise<Uint32Array> {
  return new Uint32Array(await readBuffer(gpu, buffer, offsetElems * 4, count * 4));
}

/**
 * Allocates a weight matrix [rows, cols] of `dtype` on the device, split by rows
 * so that no part exceeds the binding limit (`maxPartBytes` can be lowered to
 * exercise the split path in tests). The contents are left for the caller to write.
 */
export function allocateMatrix(
  gpu: Gpu,
  rows: number,
  cols: number,
  dtype: MatrixDType,
  label = 'matrix',
  maxPartBytes = gpu.report.limits.maxStorageBufferBindingSize,
): GpuMatrix {
  const rowBytes = matrixRowBytes(dtype, cols);
  if (rowBytes % 4 !== 0) throw new Error(`${label}: a row of ${cols} ${dtype} values is not a whole number of 32-bit words`);
  if (rowBytes > maxPartBytes) throw new Error(`${label}: one row (${rowBytes} bytes) exceeds the binding limit ${maxPartBytes}`);
  const rowsPerPart = Math.floor(maxPartBytes / rowBytes);
  const parts: GpuMatrix['parts'] = [];
  for (let row0 = 0; row0 < rows; row0 += rowsPerPart) {
    const n = Math.min(rowsPerPart, rows - row0);
    parts.push({ buffer: createStorageBuffer(gpu, n * rowBytes, `${label}[${row0}:${row0 + n}]`), row0, rows: n });
  }
  return { rows, cols, dtype, parts };
}

/** Uploads a weight matrix given as its raw little-endian bytes in `dtype` (see allocateMatrix). */
export function uploadMatrix(
  gpu: Gpu,
  raw: Uint8Array,
  rows: number,
  cols: number,
  dtype: WeightDType,
  label = 'matrix',
  maxPartBytes = gpu.report.limits.maxStorageBufferBindingSize,
): GpuMatrix {
  const rowBytes = cols * bytesPerElement(dtype);
  if (raw.byteLength !== rows * rowBytes) {
    throw new Error(`${label}: expected ${rows * rowBytes} bytes for [${rows}, ${cols}] ${dtype}, got ${raw.byteLength}`);
  }
  const m = allocateMatrix(gpu, rows, cols, dtype, label, maxPartBytes);
  for (const p of m.parts) writeBuffer(gpu, p.buffer, raw.subarray(p.row0 * rowBytes, (p.row0 + p.rows) * rowBytes));
  return m;
}

export function destroyMatrix(m: GpuMatrix): void {
  for (const p of m.parts) p.buffer.destroy();
}
