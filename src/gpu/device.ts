/**
 * Acquires the one WebGPU device that everything else runs on.
 *
 * In Node the device comes from Dawn through the `webgpu` package. Two rules
 * shape this module:
 *  - The object returned by `create()` and the adapter must stay strongly
 *    referenced for as long as the device lives. If the garbage collector takes
 *    them, Dawn later crashes inside ProcessEvents (a segfault, or "The futex
 *    facility returned an unexpected error code"). `Gpu` holds all three.
 *  - Dawn keeps the Node event loop alive while a device exists, so a program
 *    that is done must call `releaseGpu()` (or exit explicitly).
 */
import { availableParallelism } from 'node:os';
import { create, globals } from 'webgpu';
import { profileOf, type DeviceProfile } from './profile.ts';

// Dawn's bindings expose the WebGPU constants (GPUBufferUsage, ...) as an
// object to install on globalThis, where browser-style code expects them.
Object.assign(globalThis, globals);

export interface AdapterReport {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** True for CPU implementations such as Mesa's lavapipe or SwiftShader. */
  isSoftware: boolean;
  features: string[];
  /** Smallest and largest subgroup size the adapter may use (Dawn reports them); null when unknown. */
  subgroupMinSize: number | null;
  subgroupMaxSize: number | null;
  limits: {
    maxStorageBufferBindingSize: number;
    maxBufferSize: number;
    maxComputeWorkgroupStorageSize: number;
    maxComputeInvocationsPerWorkgroup: number;
    maxComputeWorkgroupSizeX: number;
    maxComputeWorkgroupsPerDimension: number;
    maxStorageBuffersPerShaderStage: number;
    minStorageBufferOffsetAlignment: number;
    minUniformBufferOffsetAlignment: number;
  };
}

export interface Gpu {
  device: GPUDevice;
  adapter: GPUAdapter;
  /** The Dawn instance (or a tab's navigator.gpu); held only so that it outlives the device (see above). */
  instance: GPU;
  report: AdapterReport;
  /** `shader-f16` was offered and enabled. */
  hasF16: boolean;
  /** `subgroups` was offered and enabled. */
  hasSubgroups: boolean;
  /** What the kernel plan is chosen from (src/gpu/profile.ts); made once, here. */
  profile: DeviceProfile;
}

export class NoAdapterError extends Error {
  constructor(detail: string) {
    super(
      `No WebGPU adapter is available (${detail}). ` +
        'With a GPU, install its Vulkan driver (NVIDIA, AMD or Intel Mesa). ' +
        'Without one, install Mesa lavapipe (software Vulkan) >= 24, on Debian 12: ' +
        'add the bookworm-backports suite, then `apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1`. ' +
        "Bookworm's own Mesa 22.3 is too old for Dawn.",
    );
    this.name = 'NoAdapterError';
  }
}

function isSoftwareAdapter(info: GPUAdapterInfo): boolean {
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`.toLowerCase();
  return /llvmpipe|lavapipe|swiftshader|software|cpu/.test(text);
}

// Dawn adds subgroupMinSize/subgroupMaxSize to GPUAdapterInfo; the WebGPU typings may lack them.
function sizeOrNull(info: GPUAdapterInfo, key: 'subgroupMinSize' | 'subgroupMaxSize'): number | null {
  const v = (info as unknown as Record<string, unknown>)[key];
  return typeof v === 'number' && v > 0 ? v : null;
}

function reportOf(adapter: GPUAdapter): AdapterReport {
  const info = adapter.info;
  const l = adapter.limits;
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    isSoftware: isSoftwareAdapter(info),
    features: [...adapter.features].map(String).sort(),
    subgroupMinSize: sizeOrNull(info, 'subgroupMinSize'),
    subgroupMaxSize: sizeOrNull(info, 'subgroupMaxSize'),
    limits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      minStorageBufferOffsetAlignment: l.minStorageBufferOffsetAlignment,
      minUniformBufferOffsetAlignment: l.minUniformBufferOffsetAlignment,
    },
  };
}

async function requestAdapter(instance: GPU): Promise<GPUAdapter> {
  // Prefer a hardware adapter; accept a software one (lavapipe) when it is all there is.
  const hw = await instance.requestAdapter({ powerPreference: 'high-performance' });
  if (hw && !isSoftwareAdapter(hw.info)) return hw;
  const any = hw ?? (await instance.requestAdapter({ forceFallbackAdapter: true }));
  if (!any) throw new NoAdapterError('requestAdapter() returned null');
  return any;
}

let current: Promise<Gpu> | null = null;
let fineTimestamps = false;

/**
 * Asks for unquantized GPU timestamps (Dawn rounds them by default, a browser's defence
 * against timing attacks): for the profiler only, and only before the first getGpu().
 * Never set in tests or for normal runs.
 */
export function requestFineTimestamps(): void {
  if (current) throw new Error('requestFineTimestamps() must come before the device is created');
  fineTimestamps = true;
}
// A second, plain strong reference: `current` is a promise, and we want the
// resolved objects pinned even while nobody awaits it.
let pinned: Gpu | null = null;

async function acquire(): Promise<Gpu> {
  if (!process.env.XDG_RUNTIME_DIR) {
    // Mesa warns on every start without it; the directory itself is unused by compute.
    process.env.XDG_RUNTIME_DIR = '/tmp';
  }
  if (!process.env.LP_NUM_THREADS) {
    // Mesa's llvmpipe/lavapipe splits each dispatch into one task per thread.
    // With only one thread per core, a core that finishes its share early
    // sits idle; measured on a 2-core machine, 4 threads per core gave +25%
    // decode and +40% prefill throughput (bench/RESULTS.md). Hardware drivers
    // ignore the variable. It must be set before Dawn loads the Vulkan driver.
    process.env.LP_NUM_THREADS = String(Math.min(32, 4 * availableParallelism()));
  }
  let instance: GPU;
  try {
    instance = create(fineTimestamps ? ['disable-dawn-features=timestamp_quantization'] : []);
  } catch (e) {
    throw new NoAdapterError(`Dawn failed to start: ${(e as Error).message}`);
  }
  const gpu = await openGpu(instance, (message) => process.stderr.write(`WebGPU error: ${message}\n`));
  pinned = gpu;
  return gpu;
}

/**
 * The device on `instance`'s best adapter, with the features and limits the kernels use: Dawn's
 * instance in Node (getGpu), or a browser tab's `navigator.gpu` (src/web/engine.ts). Errors the
 * device raises outside any call go to `onError`.
 */
export async function openGpu(instance: GPU, onError: (message: string) => void): Promise<Gpu> {
  const adapter = await requestAdapter(instance);
  const wanted: GPUFeatureName[] = [];
  const hasF16 = adapter.features.has('shader-f16');
  const hasSubgroups = adapter.features.has('subgroups');
  if (hasF16) wanted.push('shader-f16');
  if (hasSubgroups) wanted.push('subgroups' as GPUFeatureName);
  // Timestamps cost nothing until a query set is written; the profiler (src/gpu/profiler.ts) uses them.
  const hasTimestamps = adapter.features.has('timestamp-query');
  if (hasTimestamps) wanted.push('timestamp-query');
  const l = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures: wanted,
    requiredLimits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
    },
  });
  device.addEventListener('uncapturederror', (ev) => onError((ev as GPUUncapturedErrorEvent).error.message));
  const report = reportOf(adapter);
  const profile = profileOf(report, { f16: hasF16, subgroups: hasSubgroups, timestampQuery: hasTimestamps });
  return { device, adapter, instance, report, hasF16, hasSubgroups, profile };
}

/**
 * Dawn's switches that may expose tensor cores to WGSL: `chromium-experimental-subgroup-matrix`
 * is an unsafe API, needs Vulkan's cooperative-matrix extension and memory model, and on NVIDIA
 * f16 shaders, each of which Dawn keeps off by default.
 */
export const SUBGROUP_MATRIX_TOGGLES = ['allow_unsafe_apis', 'use_vulkan_memory_model', 'vulkan_enable_f16_on_nvidia'] as const;
export const SUBGROUP_MATRIX_FEATURE = 'chromium-experimental-subgroup-matrix';

/** One (M, N, K, input type, result type) shape the adapter's subgroup-matrix feature supports. */
export interface SubgroupMatrixConfig {
  M: number;
  N: number;
  K: number;
  componentType: string;
  resultComponentType: string;
}

export interface SubgroupMatrixProbe {
  adapter: string;
  toggles: readonly string[];
  offered: boolean;
  configs: SubgroupMatrixConfig[];
}

// The probe's instances and adapters: never collected while the process runs (see the module note).
const probed: unknown[] = [];

/**
 * Whether this machine's adapter offers subgroup matrices (tensor cores from WGSL) once Dawn's
 * toggles are set, and in which shapes. Uses a second Dawn instance and creates no device, so the
 * process-wide one (getGpu) keeps its default toggles.
 */
export async function probeSubgroupMatrix(): Promise<SubgroupMatrixProbe> {
  const instance = create([`enable-dawn-features=${SUBGROUP_MATRIX_TOGGLES.join(',')}`]);
  const adapter = await requestAdapter(instance);
  probed.push(instance, adapter);
  // Dawn adds subgroupMatrixConfigs to GPUAdapterInfo; the WebGPU typings lack it.
  const raw = (adapter.info as unknown as { subgroupMatrixConfigs?: Iterable<Record<string, unknown>> }).subgroupMatrixConfigs;
  const configs = [...(raw ?? [])].map((c) => ({
    M: Number(c.M),
    N: Number(c.N),
    K: Number(c.K),
    componentType: String(c.componentType),
    resultComponentType: String(c.resultComponentType),
  }));
  const info = adapter.info;
  return {
    adapter: info.description || info.device || `${info.vendor} ${info.architecture}`,
    toggles: SUBGROUP_MATRIX_TOGGLES,
    offered: adapter.features.has(SUBGROUP_MATRIX_FEATURE),
    configs,
  };
}

export function formatSubgroupMatrixProbe(p: SubgroupMatrixProbe): string {
  const shapes = p.configs.map((c) => `${c.M}x${c.N}x${c.K} ${c.componentType}->${c.resultComponentType}`).join(', ');
  return p.offered
    ? `subgroup matrix: offered by ${p.adapter} with toggles ${p.toggles.join(',')}; shapes: ${shapes || '(none listed)'}`
    : `subgroup matrix: not offered by ${p.adapter}, even with toggles ${p.toggles.join(',')} ` +
        `(Dawn needs VK_KHR_cooperative_matrix, the Vulkan memory model and f16 shaders from the driver)`;
}

/** The process-wide device, created on first use. */
export function getGpu(): Promise<Gpu> {
  if (!current) {
    current = acquire();
    current.catch(() => {
      current = null;
    });
  }
  return current;
}

/** Destroys the device so that Node can exit; a later getGpu() makes a new one. */
export async function releaseGpu(): Promise<void> {
  if (!current) return;
  const gpu = await current.catch(() => null);
  current = null;
  if (gpu) {
    gpu.device.destroy();
    // Let Dawn deliver the device-lost callback before the references go.
    await new Promise((r) => setTimeout(r, 0));
  }
  pinned = null;
}

/** Test hook: the pinned objects, to check they survive garbage collection. */
export function pinnedGpu(): Gpu | null {
  return pinned;
}

export function formatReport(r: AdapterReport): string {
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
  const lines = [
    `adapter:      ${r.description || r.device || '(unnamed)'}${r.isSoftware ? '  [software]' : ''}`,
    `vendor:       ${r.vendor || '-'}   architecture: ${r.architecture || '-'}`,
    `features:     ${r.features.join(', ')}`,
    `subgroups:    ${r.subgroupMinSize === null ? 'size not reported' : `size ${r.subgroupMinSize}..${r.subgroupMaxSize}`}`,
    `limits:`,
    `  maxStorageBufferBindingSize     ${mib(r.limits.maxStorageBufferBindingSize)}`,
    `  maxBufferSize                   ${mib(r.limits.maxBufferSize)}`,
    `  maxComputeWorkgroupStorageSize  ${r.limits.maxComputeWorkgroupStorageSize} B`,
    `  maxComputeInvocationsPerWorkgroup ${r.limits.maxComputeInvocationsPerWorkgroup}`,
    `  maxComputeWorkgroupsPerDimension  ${r.limits.maxComputeWorkgroupsPerDimension}`,
    `  maxStorageBuffersPerShaderStage   ${r.limits.maxStorageBuffersPerShaderStage}`,
  ];
  return lines.join('\n');
}
