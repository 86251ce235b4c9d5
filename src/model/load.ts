/**
 * Loading a checkpoint's weights onto the device: every tensor of the table in config.ts,
 * streamed tensor by tensor through one bounded host buffer (never the whole file in memory,
 * no mmap), kept in its stored dtype, quantized on the way in (`--quantize`), or copied as a
 * quantized folder stores it.
 */
import type { Gpu } from '../gpu/device.ts';
import { allocateMatrix, bytesPerElement, createStorageBuffer, quantLayout, writeBuffer, type GpuMatrix, type QuantFormat } from '../gpu/buffers.ts';
import { decodeToF32 } from '../util/half.ts';
import { expectedTensors, layerTensors, type LayerWeights, type ModelConfig } from './config.ts';
import { Checkpoint, CheckpointError } from './safetensors.ts';
import type { ModelSource } from '../util/files.ts';
import { isGgufPath } from './gguf_model.ts';
import { loadGgufWeights } from './gguf_load.ts';
import { checkFinite, validateCheckpoint } from './weights.ts';
import { quantizeRows } from '../kernels/quant.ref.ts';
import { folderQuantization, quantizationFor, quantizedMatrices, scalesName, validateQuantized } from './quantized.ts';

export interface LoadProgress {
  tensorsDone: number;
  tensorsTotal: number;
  bytesDone: number;
  bytesTotal: number;
  seconds: number;
}

/** A decoder layer on the device: norm weights widened to f32, projections in their stored dtype. */
export type Layer = LayerWeights<GPUBuffer, GpuMatrix>;

/** Every weight of the model on the device. */
export interface DeviceWeights {
  embed_tokens: GpuMatrix;
  layers: Layer[];
  norm: GPUBuffer;
  /** embed_tokens itself when the checkpoint ties them. */
  lm_head: GpuMatrix;
  /** Bytes of the checkpoint's tensors as stored. */
  checkpointBytes: number;
}

/** Host memory a load streams weights through unless told otherwise: large reads, few of them. */
export const STAGING_BYTES = 32 * 2 ** 20;

/** What every loader takes (loadWeights's options). */
export interface LoadOptions {
  quantize?: QuantFormat;
  files?: ModelSource;
  onProgress?: (p: LoadProgress) => void;
  stagingBytes?: number;
}

/**
 * Streams the checkpoint in `dir` (a folder, or a GGUF file: gguf_load.ts) onto the device. `quantize`: the seven projections of every
 * layer to q8 or q4 as they stream in, and embed_tokens and lm_head to vocabFormats().
 */
export async function loadWeights(
  gpu: Gpu,
  dir: string,
  config: ModelConfig,
  opts: LoadOptions,
): Promise<DeviceWeights> {
  if (isGgufPath(dir)) return loadGgufWeights(gpu, dir, config, opts);
  const stored = await folderQuantization(dir, opts.files);
  if (stored && opts.quantize && opts.quantize !== stored.format) {
    throw new Error(`${dir} is already quantized to ${stored.format}; quantizing it again to ${opts.quantize} would add the errors of both: load the original checkpoint with --quantize ${opts.quantize}`);
  }
  const ckpt = await Checkpoint.open(dir, opts.files);
  try {
    const prequantized = stored ? validateQuantized(ckpt, config, stored) : new Map<string, QuantFormat>();
    if (!stored) validateCheckpoint(ckpt, config);
    const loader = new WeightLoader(gpu, ckpt, [...expectedTensors(config).keys()], opts.onProgress, prequantized, opts.stagingBytes);
    // What --quantize makes of each matrix (none: as stored).
    const atLoad = opts.quantize ? quantizedMatrices(config, quantizationFor(config, opts.quantize)) : new Map<string, QuantFormat>();
    const layers: Layer[] = [];
    for (let i = 0; i < config.num_hidden_layers; i++) {
      const weights: [string, GPUBuffer | GpuMatrix][] = [];
      for (const t of layerTensors(config, i)) weights.push([t.key, t.kind === 'norm' ? await loader.vector(t.name) : await loader.matrix(t.name, atLoad.get(t.name))]);
      // Every key of Layer comes from the table layerTensors() walks, each of its kind, so the object is complete.
      layers.push(Object.fromEntries(weights) as Layer);
    }
    const embed_tokens = await loader.matrix('model.embed_tokens.weight', atLoad.get('model.embed_tokens.weight'));
    const lm_head = config.tie_word_embeddings ? embed_tokens : await loader.matrix('lm_head.weight', atLoad.get('lm_head.weight'));
    const norm = await loader.vector('model.norm.weight');
    await gpu.device.queue.onSubmittedWorkDone();
    return { embed_tokens, layers, norm, lm_head, checkpointBytes: ckpt.totalBytes };
  } finally {
    ckpt.close();
  }
}

/**
 * Streams tensors from the checkpoint to the device through one bounded host
 * buffer, so loading never holds the model twice in memory (a 7B model is
 * 14.5 GB of 16-bit weights; on lavapipe the "device" memory is host memory too).
 */
export class WeightLoader {
  private readonly staging: Uint8Array;
  private readonly meter: LoadMeter;

  constructor(
    private gpu: Gpu,
    private ckpt: Checkpoint,
    names: string[],
    onProgress?: (p: LoadProgress) => void,
    /** Matrices the folder stores quantized (src/model/quantized.ts), and their formats. */
    private prequantized = new Map<string, QuantFormat>(),
    stagingBytes = STAGING_BYTES,
  ) {
    this.staging = new Uint8Array(stagingBytes);
    this.meter = new LoadMeter(gpu, names.length, names.reduce((sum, n) => sum + ckpt.get(n).byteLength, 0), onProgress);
  }

  private throttle(bytes: number): Promise<void> {
    return this.meter.throttle(bytes);
  }

  private tick(bytes: number): void {
    this.meter.tick(bytes);
  }

  /**
   * A 2-D weight kept in its stored dtype (bf16 stays bf16: widened exactly in the kernels),
   * or quantized to `quantize` a staging buffer at a time.
   */
  async matrix(name: string, quantize?: QuantFormat): Promise<GpuMatrix> {
    const stored = this.prequantized.get(name);
    if (stored) return this.storedQuantizedMatrix(name, stored);
    if (quantize) return this.quantizedMatrix(name, quantize);
    const e = this.ckpt.float(name);
    const [rows, cols] = e.shape as [number, number];
    const m = allocateMatrix(this.gpu, rows, cols, e.dtype, name);
    const rowBytes = cols * bytesPerElement(e.dtype);
    await this.streamRows(name, m, (part, r, bytes) => writeBuffer(this.gpu, part.buffer, bytes, r * rowBytes));
    return m;
  }

  /** Rows widened to f32 and quantized on the host as they stream through (only one staging buffer's worth is ever held). */
  private async quantizedMatrix(name: string, format: QuantFormat): Promise<GpuMatrix> {
    const e = this.ckpt.float(name);
    const [rows, cols] = e.shape as [number, number];
    const L = quantLayout(format, cols);
    const m = allocateMatrix(this.gpu, rows, cols, format, name);
    await this.streamRows(name, m, (part, r, bytes, n) => {
      const q = quantizeRows(decodeToF32(bytes, e.dtype), n, cols, format, name, part.row0 + r);
      writeBuffer(this.gpu, part.buffer, q.codes, r * L.codeRowBytes);
      writeBuffer(this.gpu, part.buffer, q.scales, part.rows * L.codeRowBytes + r * L.scaleRowBytes);
    });
    return m;
  }

  /**
   * Reads float matrix `name` into the staging buffer a run of rows at a time, each checked finite,
   * and hands each run's bytes to `write` with the part of `m` it belongs to (r: its first row
   * within the part, n: its rows), which puts them on the device in the matrix's own format.
   */
  private async streamRows(
    name: string,
    m: GpuMatrix,
    write: (part: GpuMatrix['parts'][number], r: number, bytes: Uint8Array, n: number) => void,
  ): Promise<void> {
    const e = this.ckpt.float(name);
    const cols = e.shape[1]!;
    const rowBytes = cols * bytesPerElement(e.dtype);
    const rowsPerRead = Math.max(1, Math.floor(this.staging.byteLength / rowBytes));
    for (const part of m.parts) {
      for (let r = 0; r < part.rows; r += rowsPerRead) {
        const n = Math.min(rowsPerRead, part.rows - r);
        const bytes = await this.ckpt.read(name, this.staging, (part.row0 + r) * rowBytes, n * rowBytes);
        checkFinite(bytes, e.dtype, e.file, name, (part.row0 + r) * cols);
        write(part, r, bytes, n);
        await this.throttle(bytes.byteLength);
      }
    }
    this.tick(e.byteLength);
  }

  /** A matrix a quantized folder stores as its two planes: each part's rows copied as they are. */
  private async storedQuantizedMatrix(name: string, format: QuantFormat): Promise<GpuMatrix> {
    const e = this.ckpt.get(name);
    const rows = e.shape[0]!;
    const cols = format === 'q8' ? e.shape[1]! : e.shape[1]! * 2; // one byte per weight, or two weights per byte
    const L = quantLayout(format, cols);
    const scales = scalesName(name);
    const m = allocateMatrix(this.gpu, rows, cols, format, name);
    const rowsPerRead = Math.max(1, Math.floor(this.staging.byteLength / L.codeRowBytes));
    for (const part of m.parts) {
      for (let r = 0; r < part.rows; r += rowsPerRead) {
        const n = Math.min(rowsPerRead, part.rows - r);
        writeBuffer(this.gpu, part.buffer, await this.ckpt.read(name, this.staging, (part.row0 + r) * L.codeRowBytes, n * L.codeRowBytes), r * L.codeRowBytes);
        const s = await this.ckpt.read(scales, this.staging, (part.row0 + r) * L.scaleRowBytes, n * L.scaleRowBytes);
        checkFinite(s, 'f16', this.ckpt.get(scales).file, scales, (part.row0 + r) * L.scalesPerRow);
        writeBuffer(this.gpu, part.buffer, s, part.rows * L.codeRowBytes + r * L.scaleRowBytes);
        await this.throttle(n * L.rowBytes);
      }
    }
    this.tick(e.byteLength);
    return m;
  }

  /** A norm weight, widened to f32 on the host (it is tiny). */
  async vector(name: string): Promise<GPUBuffer> {
    const e = this.ckpt.float(name);
    if (e.shape.length !== 1) throw new CheckpointError(`${e.file}: '${name}' should be a vector`);
    const raw = await this.ckpt.read(name);
    checkFinite(raw, e.dtype, e.file, name);
    const values = decodeToF32(raw, e.dtype);
    const buffer = createStorageBuffer(this.gpu, values.byteLength, name);
    writeBuffer(this.gpu, buffer, values);
    this.tick(e.byteLength);
    return buffer;
  }

}

/** A load's progress reports, and the pauses that keep its host memory bounded: shared by the loaders of every format. */
export class LoadMeter {
  private started = performance.now();
  private done = 0;
  private bytes = 0;
  private sinceSync = 0;

  constructor(
    private gpu: Gpu,
    private readonly total: number,
    private readonly totalBytes: number,
    private onProgress?: (p: LoadProgress) => void,
  ) {}

  /** Lets Dawn recycle its upload memory now and then, so host memory stays bounded. */
  async throttle(bytes: number): Promise<void> {
    this.sinceSync += bytes;
    if (this.sinceSync >= 256 * 2 ** 20) {
      this.sinceSync = 0;
      await this.gpu.device.queue.onSubmittedWorkDone();
    }
  }

  /** One tensor of `bytes` (as stored) is on the device. */
  tick(bytes: number): void {
    this.done++;
    this.bytes += bytes;
    this.onProgress?.({
      tensorsDone: this.done,
      tensorsTotal: this.total,
      bytesDone: this.bytes,
      bytesTotal: this.totalBytes,
      seconds: (performance.now() - this.started) / 1000,
    });
  }
}
