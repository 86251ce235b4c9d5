/**
 * GPU time per kernel from timestamp queries (`timestamp-query`; lavapipe offers it too).
 * While a profiler is attached, every dispatch gets its own compute pass with a timestamp
 * pair (the WebGPU way to time one dispatch), so profiled steps run a little slower than
 * unprofiled ones; the figures are for finding where the time goes, not for headlines.
 *
 *   const prof = GpuProfiler.attach(gpu);
 *   for (...) { await model.forward([token], ...); await prof.endStep(); }
 *   prof.detach(); prof.kernels(); prof.steps();
 */
import type { Gpu } from './device.ts';
import { observeDispatches, type DispatchCost, type DispatchObserver } from './encoder.ts';

/** WebGPU's most queries per set; a step with more dispatches leaves the rest untimed. */
const CAPACITY = 4096;

export interface KernelTiming {
  /** The pipeline's label: operation, variant, dtype. */
  label: string;
  calls: number;
  seconds: number;
  /** Bytes the calls must move (0 when the kernel does not say). */
  bytes: number;
}

export interface StepTiming {
  /** Sum of the step's kernel times. */
  gpuSeconds: number;
  /** First kernel start to last kernel end. */
  spanSeconds: number;
  /** Gaps between kernels inside the span: the GPU waiting on the CPU or on pass changes. */
  idleSeconds: number;
  /** CPU time spent recording the step (Encoder creation to its last submit). */
  encodeSeconds: number;
  dispatches: number;
  untimed: number;
}

export class ProfilerUnavailableError extends Error {
  constructor(adapter: string) {
    super(`profiling needs the WebGPU 'timestamp-query' feature, which this adapter (${adapter}) does not offer`);
    this.name = 'ProfilerUnavailableError';
  }
}

export class GpuProfiler implements DispatchObserver {
  private readonly querySet: GPUQuerySet;
  private readonly resolveBuffer: GPUBuffer;
  private readonly readBuffer: GPUBuffer;
  private pending: { label: string; bytes: number }[] = [];
  private untimed = 0;
  private encodeMs = 0;
  private byLabel = new Map<string, KernelTiming>();
  private stepList: StepTiming[] = [];

  private constructor(private readonly gpu: Gpu) {
    this.querySet = gpu.device.createQuerySet({ type: 'timestamp', count: CAPACITY });
    this.resolveBuffer = gpu.device.createBuffer({ size: CAPACITY * 8, usage: 0x0200 | 0x0004, label: 'profiler.resolve' }); // QUERY_RESOLVE | COPY_SRC
    this.readBuffer = gpu.device.createBuffer({ size: CAPACITY * 8, usage: 0x0001 | 0x0008, label: 'profiler.read' }); // MAP_READ | COPY_DST
  }

  /** Starts timing every dispatch on this device. */
  static attach(gpu: Gpu): GpuProfiler {
    if (!gpu.profile.features.timestampQuery) throw new ProfilerUnavailableError(gpu.profile.adapter);
    const p = new GpuProfiler(gpu);
    observeDispatches(gpu, p);
    return p;
  }

  pass(label: string, cost: DispatchCost | undefined): GPUComputePassDescriptor {
    const i = this.pending.length;
    if (2 * i + 2 > CAPACITY) {
      this.untimed++;
      return {};
    }
    this.pending.push({ label, bytes: cost?.bytes ?? 0 });
    return { timestampWrites: { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } };
  }

  encoded(ms: number): void {
    this.encodeMs += ms;
  }

  /** Reads back the timestamps of everything submitted since the last call: one step. */
  async endStep(): Promise<StepTiming> {
    const n = this.pending.length;
    const step: StepTiming = { gpuSeconds: 0, spanSeconds: 0, idleSeconds: 0, encodeSeconds: this.encodeMs / 1000, dispatches: n + this.untimed, untimed: this.untimed };
    if (n > 0) {
      const enc = this.gpu.device.createCommandEncoder();
      enc.resolveQuerySet(this.querySet, 0, 2 * n, this.resolveBuffer, 0);
      enc.copyBufferToBuffer(this.resolveBuffer, 0, this.readBuffer, 0, 2 * n * 8);
      this.gpu.device.queue.submit([enc.finish()]);
      await this.readBuffer.mapAsync(0x0001, 0, 2 * n * 8);
      const t = new BigInt64Array(this.readBuffer.getMappedRange(0, 2 * n * 8).slice(0));
      this.readBuffer.unmap();
      const intervals: [number, number][] = [];
      for (let i = 0; i < n; i++) {
        const begin = Number(t[2 * i]!) / 1e9;
        const end = Number(t[2 * i + 1]!) / 1e9;
        const s = Math.max(0, end - begin);
        const k = this.pending[i]!;
        const agg = this.byLabel.get(k.label) ?? { label: k.label, calls: 0, seconds: 0, bytes: 0 };
        agg.calls++;
        agg.seconds += s;
        agg.bytes += k.bytes;
        this.byLabel.set(k.label, agg);
        step.gpuSeconds += s;
        intervals.push([begin, end]);
      }
      intervals.sort((a, b) => a[0] - b[0]);
      let busy = 0;
      let [curA, curB] = intervals[0]!;
      for (const [a, b] of intervals.slice(1)) {
        if (a > curB) {
          busy += curB - curA;
          [curA, curB] = [a, b];
        } else curB = Math.max(curB, b);
      }
      busy += curB - curA;
      step.spanSeconds = Math.max(...intervals.map((x) => x[1])) - intervals[0]![0];
      step.idleSeconds = Math.max(0, step.spanSeconds - busy);
    }
    this.pending = [];
    this.untimed = 0;
    this.encodeMs = 0;
    this.stepList.push(step);
    return step;
  }

  /** Stops timing; later dispatches run in one pass again. */
  detach(): void {
    observeDispatches(this.gpu, null);
    this.querySet.destroy();
    this.resolveBuffer.destroy();
    this.readBuffer.destroy();
  }

  /** Per kernel label, summed over the steps, slowest first. */
  kernels(): KernelTiming[] {
    return [...this.byLabel.values()].sort((a, b) => b.seconds - a.seconds);
  }

  steps(): StepTiming[] {
    return [...this.stepList];
  }
}
