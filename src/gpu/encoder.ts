/**
 * Recording compute work: pipelines are compiled once per (shader, entry point,
 * override constants) and cached; dispatches are recorded into one compute pass
 * and submitted together, so a whole forward step is a single queue submission.
 *
 * Binding convention for every kernel: @group(0) @binding(0) is the kernel's
 * uniform `Params` struct (when it has one), then its storage buffers from
 * @binding(1) on, in the order the wrapper passes them.
 */
import { readFileSync } from 'node:fs';
import type { Gpu } from './device.ts';

const pipelines = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();
const sources = new Map<string, string>();

/**
 * WGSL sources given ahead of time, by the URL `wgsl()` resolves each to: a browser bundle has no
 * files beside its modules, so it carries them as text (src/server/web.ts, src/web/engine.ts).
 */
export function provideWgsl(byUrl: Record<string, string>): void {
  for (const [url, code] of Object.entries(byUrl)) sources.set(url, code);
}

/** Reads a `.wgsl` file that sits beside the calling module (pass `import.meta.url`), unless provided. */
export function wgsl(file: string, base: string): string {
  const url = new URL(file, base);
  let src = sources.get(url.href);
  if (src === undefined) {
    src = readFileSync(url, 'utf8');
    sources.set(url.href, src);
  }
  return src;
}

export type Overrides = Record<string, number>;

/**
 * The compute pipeline for `code`, compiled on first use. Override constants
 * select variants (weight dtype, workgroup size) without a second source file;
 * keep their number small: each variant is another multi-second compile on lavapipe.
 */
export function getPipeline(gpu: Gpu, code: string, entryPoint = 'main', constants: Overrides = {}, label?: string): GPUComputePipeline {
  let cache = pipelines.get(gpu.device);
  if (!cache) {
    cache = new Map();
    pipelines.set(gpu.device, cache);
  }
  const key = `${entryPoint}|${JSON.stringify(constants)}|${code}`;
  let pipeline = cache.get(key);
  if (!pipeline) {
    const module = gpu.device.createShaderModule({ code, label });
    pipeline = gpu.device.createComputePipeline({
      label: label ?? entryPoint,
      layout: 'auto',
      compute: { module, entryPoint, constants },
    });
    cache.set(key, pipeline);
  }
  return pipeline;
}

/** Checks that `code` compiles; throws with the compiler's messages. For tests and `openchat info`. */
export async function checkShader(gpu: Gpu, code: string, label = 'shader'): Promise<void> {
  const module = gpu.device.createShaderModule({ code, label });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error');
  if (errors.length) {
    throw new Error(`${label} failed to compile:\n` + errors.map((m) => `  ${m.lineNum}:${m.linePos} ${m.message}`).join('\n'));
  }
}

const UNIFORM_ALIGN = 256; // minUniformBufferOffsetAlignment on every WebGPU device
const ARENA_BYTES = 64 * 1024;
const UNIFORM = 0x0040 | 0x0008; // UNIFORM | COPY_DST

/**
 * Uniform parameters of many dispatches packed into shared buffers. Reusing the
 * buffers across submissions is safe: queue.writeBuffer is ordered after every
 * earlier submit on the same queue.
 */
class UniformArena {
  private chunks: GPUBuffer[] = [];
  private chunk = 0;
  private used = 0;
  private staging = new Uint8Array(ARENA_BYTES);

  constructor(private gpu: Gpu) {}

  push(data: ArrayBuffer): GPUBufferBinding {
    const size = Math.ceil(data.byteLength / 16) * 16;
    if (size > ARENA_BYTES) throw new Error('uniform block too large');
    if (this.used + size > ARENA_BYTES) this.nextChunk();
    const buffer = this.current();
    const offset = this.used;
    this.staging.set(new Uint8Array(data), offset);
    this.used = offset + Math.ceil(size / UNIFORM_ALIGN) * UNIFORM_ALIGN;
    return { buffer, offset, size };
  }

  /** Uploads what was pushed into the current chunk; call before submit. */
  flush(): void {
    if (this.used > 0) this.gpu.device.queue.writeBuffer(this.current(), 0, this.staging, 0, this.used);
  }

  reset(): void {
    this.chunk = 0;
    this.used = 0;
  }

  private current(): GPUBuffer {
    while (this.chunks.length <= this.chunk) {
      this.chunks.push(this.gpu.device.createBuffer({ size: ARENA_BYTES, usage: UNIFORM, label: 'uniform-arena' }));
    }
    return this.chunks[this.chunk]!;
  }

  private nextChunk(): void {
    this.flush();
    this.chunk++;
    this.used = 0;
  }
}

const arenas = new WeakMap<GPUDevice, UniformArena>();

/** Anything a kernel binds as storage: a whole buffer or a byte range of one. */
export type Binding = GPUBuffer | GPUBufferBinding;

function isBuffer(b: Binding): b is GPUBuffer {
  return typeof (b as GPUBuffer).destroy === 'function';
}

/**
 * One command buffer's worth of compute work. Kernels record dispatches into it;
 * `submit()` sends them all. Only one Encoder may be open at a time per device
 * (they share the uniform arena).
 */
export class Encoder {
  private readonly encoder: GPUCommandEncoder;
  private pass: GPUComputePassEncoder;
  private readonly arena: UniformArena;
  dispatches = 0;

  constructor(readonly gpu: Gpu) {
    let arena = arenas.get(gpu.device);
    if (!arena) {
      arena = new UniformArena(gpu);
      arenas.set(gpu.device, arena);
    }
    this.arena = arena;
    this.arena.reset();
    this.encoder = gpu.device.createCommandEncoder();
    this.pass = this.encoder.beginComputePass();
  }

  /**
   * Records one dispatch. `params` (if given) is bound at binding 0 as a uniform;
   * `storage` follow from binding 1 (or 0 when there are no params).
   */
  dispatch(
    pipeline: GPUComputePipeline,
    params: ArrayBuffer | null,
    storage: Binding[],
    workgroups: [number, number?, number?],
  ): void {
    const entries: GPUBindGroupEntry[] = [];
    let binding = 0;
    if (params) entries.push({ binding: binding++, resource: this.arena.push(params) });
    for (const s of storage) entries.push({ binding: binding++, resource: isBuffer(s) ? { buffer: s } : s });
    const bindGroup = this.gpu.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    const [x, y = 1, z = 1] = workgroups;
    const max = this.gpu.report.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) throw new Error(`dispatch of ${x}x${y}x${z} workgroups exceeds the limit ${max}`);
    if (x === 0 || y === 0 || z === 0) return;
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, bindGroup);
    this.pass.dispatchWorkgroups(x, y, z);
    this.dispatches++;
  }

  /** Records a buffer-to-buffer copy between dispatches (copies cannot sit inside a compute pass). */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    this.pass.end();
    this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, size);
    this.pass = this.encoder.beginComputePass();
  }

  /** Ends the pass and submits everything recorded, uniforms first. */
  submit(): void {
    this.pass.end();
    this.arena.flush();
    this.gpu.device.queue.submit([this.encoder.finish()]);
  }
}

/** Packs a uniform Params struct of u32/i32/f32 fields, in declaration order. */
export function params(fields: Array<number | { f32: number } | { i32: number }>): ArrayBuffer {
  const buf = new ArrayBuffer(Math.max(16, Math.ceil((fields.length * 4) / 16) * 16));
  const view = new DataView(buf);
  fields.forEach((f, i) => {
    if (typeof f === 'number') view.setUint32(i * 4, f, true);
    else if ('f32' in f) view.setFloat32(i * 4, f.f32, true);
    else view.setInt32(i * 4, f.i32, true);
  });
  return buf;
}
