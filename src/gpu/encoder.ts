/**
 * Recording compute work: pipelines are compiled once per (shader, entry point,
 * override constants) and cached; dispatches are recorded into one compute pass
 * and submitted together (or in a few submissions, so the GPU starts while the rest
 * is encoded: `submitSoFar`). Uniform parameters of all dispatches share one buffer,
 * uploaded once per submission, and bind groups are cached by what they bind, so a
 * decode step that repeats the last one creates none.
 *
 * Binding convention for every kernel: @group(0) @binding(0) is the kernel's
 * uniform `Params` struct (when it has one), then its storage buffers from
 * @binding(1) on, in the order the wrapper passes them.
 */
import { readFileSync } from 'node:fs';
import type { Gpu } from './device.ts';

const pipelines = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();
/** Each .wgsl file's text, by its URL: read once, or provided (provideWgsl). */
const files = new Map<string, string>();

/**
 * WGSL sources given ahead of time, by the URL `wgsl()` resolves each to: a browser bundle has no
 * files beside its modules, so it carries them as text (src/server/web.ts, src/web/engine.ts).
 * Included files are looked up here too, so a bundle carries every .wgsl file it may include.
 */
export function provideWgsl(byUrl: Record<string, string>): void {
  for (const [url, code] of Object.entries(byUrl)) files.set(url, code);
}

function fileText(url: URL): string {
  let text = files.get(url.href);
  if (text === undefined) {
    text = readFileSync(url, 'utf8');
    files.set(url.href, text);
  }
  return text;
}

/**
 * What the `// #include <name>` lines of a module stand for: name -> file, relative to the
 * `base` the module is loaded from (a wrapper's variant choice: the weight reader, the
 * reduction, the KV-cache format).
 */
export type WgslSlots = Readonly<Record<string, string>>;

/** `// #include "path.wgsl"` or `// #include <name>`; the rest of the line is free text. */
const INCLUDE = /^\s*\/\/\s*#include\b(.*)$/;
const INCLUDE_TARGET = /^\s+(?:"([^"]+)"|<([A-Za-z_][A-Za-z0-9_]*)>)(?:\s|$)/;
/** WGSL's global directives, which must open a module. */
export const GLOBAL_DIRECTIVE = /^\s*(?:enable|requires|diagnostic)\b[^;]*;\s*(?:\/\/.*)?$/;

interface WgslModule {
  code: string;
  /** The URL of each file in the module, in module order (the file itself last). */
  files: string[];
}

const modules = new Map<string, WgslModule>();

/**
 * The WGSL module of `file` (relative to `base`, a module's import.meta.url): the file with what
 * it includes. A file states its includes at its top, one directive a line, in a comment so
 * that the file stays WGSL:
 *
 *   // #include "params.wgsl"      a file, relative to the including file
 *   // #include <weight_reader>    the file the caller binds the name to in `slots`
 *
 * The rest of a directive's line is free text (what the file takes from the included one).
 * Resolution is depth-first: a file's includes come before its own text, in the order of its
 * directives, and each file enters a module once (the first directive that names it). Global
 * directives (`enable`, `requires`, `diagnostic`) move to the top of the module, once each.
 * A directive after the file's first line of code, an unbound name and a bound name that no file
 * of the module includes are errors.
 */
function resolveModule(file: string, base: string, slots: WgslSlots): WgslModule {
  const root = new URL(file, base);
  let key = root.href;
  for (const name of Object.keys(slots).sort()) key += `|${name}=${new URL(slots[name]!, base).href}`;
  const made = modules.get(key);
  if (made) return made;
  const seen = new Set<string>();
  const used = new Set<string>();
  const directives: string[] = [];
  const parts: string[] = [];
  const order: string[] = [];
  const visit = (url: URL): void => {
    if (seen.has(url.href)) return;
    seen.add(url.href);
    const body: string[] = [];
    let inCode = false;
    fileText(url)
      .split('\n')
      .forEach((line, i) => {
        const where = `${url.pathname}:${i + 1}`;
        const directive = INCLUDE.exec(line);
        if (directive) {
          if (inCode) throw new Error(`${where}: #include after the first line of code; a file states its includes at its top`);
          const target = INCLUDE_TARGET.exec(directive[1]!);
          if (!target) throw new Error(`${where}: expected #include "file.wgsl" or #include <name>, got '${line.trim()}'`);
          const [, path, name] = target;
          if (path !== undefined) {
            visit(new URL(path, url));
          } else {
            const bound = slots[name!];
            if (bound === undefined) throw new Error(`${where}: #include <${name}> is not bound by the wrapper (it binds: ${Object.keys(slots).join(', ') || 'nothing'})`);
            used.add(name!);
            visit(new URL(bound, base));
          }
        } else if (GLOBAL_DIRECTIVE.test(line)) {
          const d = line.replace(/\/\/.*$/, '').trim();
          if (!directives.includes(d)) directives.push(d);
          return;
        } else if (!inCode && line.trim() !== '' && !line.trim().startsWith('//')) {
          inCode = true;
        }
        body.push(line);
      });
    parts.push(body.join('\n'));
    order.push(url.href);
  };
  visit(root);
  const unused = Object.keys(slots).filter((name) => !used.has(name));
  if (unused.length) throw new Error(`${root.pathname}: the wrapper binds <${unused.join('>, <')}>, which no file of the module includes`);
  const module = { code: [...directives, ...parts].join('\n'), files: order };
  modules.set(key, module);
  return module;
}

/**
 * The WGSL module of `file` beside `base` (pass `import.meta.url`), its includes resolved
 * (resolveModule above: `// #include "file.wgsl"`, `// #include <name>` bound in `slots`).
 * Made once per (file, slots).
 */
export function wgsl(file: string, base: string, slots: WgslSlots = {}): string {
  return resolveModule(file, base, slots).code;
}

/** The URLs of the files that make up wgsl(file, base, slots), in module order (the file itself last). */
export function wgslFiles(file: string, base: string, slots: WgslSlots = {}): readonly string[] {
  return resolveModule(file, base, slots).files;
}

/**
 * A shader's code with a small id, made once per distinct source: pipelines are cached
 * by (id, entry point, constants), so a lookup never hashes or concatenates the source.
 */
export interface ShaderSource {
  readonly id: number;
  readonly code: string;
}

const interned = new Map<string, ShaderSource>();

/** The ShaderSource for `code`; the same object for the same text. */
export function shaderSource(code: string): ShaderSource {
  let s = interned.get(code);
  if (!s) {
    s = { id: interned.size + 1, code };
    interned.set(code, s);
  }
  return s;
}

const checkedSources = new WeakSet<ShaderSource>();

/**
 * The ShaderSource for `code`, after checking once that its `struct Params` is `layout`
 * (so a wrapper's typed uniform layout and its kernel cannot drift apart).
 */
export function kernelSource(code: string | ShaderSource, layout: { check(code: string): void }): ShaderSource {
  const s = typeof code === 'string' ? shaderSource(code) : code;
  if (!checkedSources.has(s)) {
    layout.check(s.code);
    checkedSources.add(s);
  }
  return s;
}

export type Overrides = Record<string, number>;

/**
 * The compute pipeline for `code`, compiled on first use. Override constants
 * select variants (weight dtype, tile sizes) without a second source file;
 * keep their number small: each variant is another multi-second compile on lavapipe.
 */
export function getPipeline(
  gpu: Gpu,
  code: string | ShaderSource,
  entryPoint = 'main',
  constants: Overrides = {},
  label?: string,
): GPUComputePipeline {
  let cache = pipelines.get(gpu.device);
  if (!cache) {
    cache = new Map();
    pipelines.set(gpu.device, cache);
  }
  const src = typeof code === 'string' ? shaderSource(code) : code;
  let key = `${src.id}|${entryPoint}`;
  for (const k in constants) key += `|${k}=${constants[k]}`;
  let pipeline = cache.get(key);
  if (!pipeline) {
    const module = gpu.device.createShaderModule({ code: src.code, label });
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
 * Uniform parameters of many dispatches packed into shared buffers, uploaded with one
 * writeBuffer per submission. A step that records the same dispatches as the step before
 * puts each one's uniforms at the same offset, so its bind groups are found in the cache
 * below. Reusing the buffers across submissions is safe: queue.writeBuffer is ordered
 * after every earlier submit on the same queue.
 */
class UniformArena {
  private chunks: GPUBuffer[] = [];
  private chunk = 0;
  private used = 0;
  /** Bytes of the current chunk already uploaded (by a submit part-way through a step). */
  private flushed = 0;
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

  /** Uploads what was pushed into the current chunk since the last flush; call before submit. */
  flush(): void {
    if (this.used > this.flushed) {
      this.gpu.device.queue.writeBuffer(this.current(), this.flushed, this.staging, this.flushed, this.used - this.flushed);
    }
    this.flushed = this.used;
  }

  reset(): void {
    this.chunk = 0;
    this.used = 0;
    this.flushed = 0;
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
    this.flushed = 0;
  }
}

const arenas = new WeakMap<GPUDevice, UniformArena>();

/** Anything a kernel binds as storage: a whole buffer or a byte range of one. */
export type Binding = GPUBuffer | GPUBufferBinding;

function isBuffer(b: Binding): b is GPUBuffer {
  return typeof (b as GPUBuffer).destroy === 'function';
}

/**
 * Bind groups by (pipeline, bound ranges). The model binds the same buffers at the same
 * uniform offsets every step, so after the first step every dispatch finds its bind group
 * here instead of creating one (a measurable cost per dispatch on a GPU, design note).
 * Objects get small ids through WeakMaps: a destroyed buffer's entries are never hit again,
 * and the cache is dropped when it grows past BIND_GROUP_CACHE entries (tests make many).
 */
const BIND_GROUP_CACHE = 4096;
const objectIds = new WeakMap<object, number>();
let nextObjectId = 1;
function idOf(o: object): number {
  let id = objectIds.get(o);
  if (id === undefined) {
    id = nextObjectId++;
    objectIds.set(o, id);
  }
  return id;
}
const bindGroups = new WeakMap<GPUDevice, Map<string, GPUBindGroup>>();

/** What a dispatch moves, for the profiler's bytes/time (optional; 0 when unknown). */
export interface DispatchCost {
  bytes: number;
  /** What the call works on, when the pipeline's label alone would lump different shapes together (e.g. '4096x4096'). */
  shape?: string;
}

/**
 * Receives every dispatch while attached to a device (src/gpu/profiler.ts): profiling
 * gives each dispatch its own compute pass with a timestamp pair.
 */
export interface DispatchObserver {
  /** The pass descriptor for one dispatch (its timestamp writes). */
  pass(label: string, cost: DispatchCost | undefined): GPUComputePassDescriptor;
  /** One encoder's CPU time from its creation to its last submit. */
  encoded(ms: number, dispatches: number): void;
}
const observers = new WeakMap<GPUDevice, DispatchObserver>();

/** Attaches (or with null, detaches) the device's dispatch observer: the profiler. */
export function observeDispatches(gpu: Gpu, o: DispatchObserver | null): void {
  if (o) observers.set(gpu.device, o);
  else observers.delete(gpu.device);
}

/**
 * One step's worth of compute work. Kernels record dispatches into it; `submit()` sends
 * them all, and `submitSoFar()` sends what is recorded so far and goes on recording (so the
 * GPU starts while the rest is encoded). Only one Encoder may be open at a time per device
 * (they share the uniform arena).
 */
export class Encoder {
  private encoder: GPUCommandEncoder;
  private pass: GPUComputePassEncoder | null = null;
  private readonly arena: UniformArena;
  private readonly bindGroups: Map<string, GPUBindGroup>;
  private readonly observer: DispatchObserver | undefined;
  private readonly started = performance.now();
  dispatches = 0;

  constructor(readonly gpu: Gpu) {
    let arena = arenas.get(gpu.device);
    if (!arena) {
      arena = new UniformArena(gpu);
      arenas.set(gpu.device, arena);
    }
    this.arena = arena;
    this.arena.reset();
    let groups = bindGroups.get(gpu.device);
    if (!groups) {
      groups = new Map();
      bindGroups.set(gpu.device, groups);
    }
    this.bindGroups = groups;
    this.observer = observers.get(gpu.device);
    this.encoder = gpu.device.createCommandEncoder();
  }

  /**
   * Records one dispatch. `params` (if given) is bound at binding 0 as a uniform;
   * `storage` follow from binding 1 (or 0 when there are no params). `cost` feeds the profiler.
   */
  dispatch(
    pipeline: GPUComputePipeline,
    params: ArrayBuffer | null,
    storage: Binding[],
    workgroups: [number, number?, number?],
    cost?: DispatchCost,
  ): void {
    const [x, y = 1, z = 1] = workgroups;
    const max = this.gpu.report.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) throw new Error(`dispatch of ${x}x${y}x${z} workgroups exceeds the limit ${max}`);
    if (x === 0 || y === 0 || z === 0) return;
    const resources: GPUBufferBinding[] = [];
    if (params) resources.push(this.arena.push(params));
    for (const s of storage) resources.push(isBuffer(s) ? { buffer: s } : s);
    let key = String(idOf(pipeline));
    for (const r of resources) key += `|${idOf(r.buffer)}:${r.offset ?? 0}:${r.size ?? -1}`;
    let bindGroup = this.bindGroups.get(key);
    if (!bindGroup) {
      if (this.bindGroups.size >= BIND_GROUP_CACHE) this.bindGroups.clear();
      const entries = resources.map((resource, binding) => ({ binding, resource }));
      bindGroup = this.gpu.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
      this.bindGroups.set(key, bindGroup);
    }
    let pass: GPUComputePassEncoder;
    if (this.observer) {
      this.endPass();
      pass = this.encoder.beginComputePass(this.observer.pass(cost?.shape ? `${pipeline.label} ${cost.shape}` : pipeline.label, cost));
    } else {
      pass = this.pass ??= this.encoder.beginComputePass();
    }
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    if (this.observer) pass.end();
    this.dispatches++;
  }

  /** Records a buffer-to-buffer copy between dispatches (copies cannot sit inside a compute pass). */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    this.endPass();
    this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, size);
  }

  /** Submits everything recorded so far and keeps recording into a new command buffer. */
  submitSoFar(): void {
    this.endPass();
    this.arena.flush();
    this.gpu.device.queue.submit([this.encoder.finish()]);
    this.encoder = this.gpu.device.createCommandEncoder();
  }

  /** Ends the pass and submits everything recorded, uniforms first. */
  submit(): void {
    this.endPass();
    this.arena.flush();
    this.gpu.device.queue.submit([this.encoder.finish()]);
    this.observer?.encoded(performance.now() - this.started, this.dispatches);
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = null;
  }
}

/** The WGSL scalar types a uniform field may have. */
export type UniformType = 'u32' | 'i32' | 'f32';

/**
 * A uniform struct's layout, declared once beside its kernel wrapper, in the WGSL
 * struct's field order: `pack` is typed by it, and `check` (run once when the kernel's
 * source is made) refuses a WGSL `struct Params` that differs from it.
 */
export class UniformLayout<F extends Record<string, UniformType>> {
  private readonly names: (keyof F & string)[];
  readonly bytes: number;

  constructor(readonly fields: F) {
    this.names = Object.keys(fields) as (keyof F & string)[];
    this.bytes = Math.max(16, Math.ceil((this.names.length * 4) / 16) * 16);
  }

  pack(values: { [K in keyof F]: number }): ArrayBuffer {
    const buf = new ArrayBuffer(this.bytes);
    const view = new DataView(buf);
    this.names.forEach((name, i) => {
      const v = values[name];
      const t = this.fields[name];
      if (t === 'f32') view.setFloat32(i * 4, v, true);
      else if (t === 'i32') view.setInt32(i * 4, v, true);
      else view.setUint32(i * 4, v, true);
    });
    return buf;
  }

  /** Throws unless `code` declares `struct <name>` with exactly these fields and types, in order. */
  check(code: string, name = 'Params'): void {
    const m = new RegExp(`struct\\s+${name}\\s*\\{([^}]*)\\}`).exec(code);
    if (!m) throw new Error(`uniform layout: no 'struct ${name}' in the shader`);
    const declared = m[1]!
      .split('\n')
      .map((l) => l.replace(/\/\/.*$/, ''))
      .join(' ')
      .split(',')
      .map((f) => f.trim())
      .filter(Boolean)
      .map((f) => f.replace(/\s+/g, ''));
    const expected = this.names.map((n) => `${n}:${this.fields[n]}`);
    if (declared.join(',') !== expected.join(',')) {
      throw new Error(`uniform layout: WGSL struct ${name} {${declared.join(', ')}} differs from the TypeScript layout {${expected.join(', ')}}`);
    }
  }
}

/** Packs a uniform Params struct of u32/i32/f32 fields, in declaration order (inline shaders of tests and benchmarks; kernels declare a UniformLayout). */
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
