/**
 * What the kernel plan is chosen from: the adapter's kind, vendor, subgroup sizes,
 * the optional features this engine enabled, and its limits. Made once when the
 * device is created (device.ts) and never recomputed; src/kernels/plan.ts turns it
 * into the variants the model runs.
 */
import type { AdapterReport } from './device.ts';

export interface DeviceProfile {
  /** 'software' for CPU implementations (lavapipe, SwiftShader): one invocation is one SIMD lane. */
  kind: 'software' | 'hardware';
  vendor: string;
  adapter: string;
  /** Subgroup sizes the adapter may use, or null without the `subgroups` feature. Never assume 32. */
  subgroupSizes: { min: number; max: number } | null;
  /** Optional features that were offered and enabled on the device. */
  features: { f16: boolean; subgroups: boolean; timestampQuery: boolean };
  limits: AdapterReport['limits'];
}

export function profileOf(report: AdapterReport, enabled: DeviceProfile['features']): DeviceProfile {
  const sizes =
    enabled.subgroups && report.subgroupMinSize !== null && report.subgroupMaxSize !== null
      ? { min: report.subgroupMinSize, max: report.subgroupMaxSize }
      : enabled.subgroups
        ? { min: 4, max: 128 } // the range WebGPU allows, when Dawn does not say
        : null;
  return {
    kind: report.isSoftware ? 'software' : 'hardware',
    vendor: report.vendor || 'unknown',
    adapter: report.description || report.device || '(unnamed)',
    subgroupSizes: sizes,
    features: enabled,
    limits: report.limits,
  };
}

export function formatProfile(p: DeviceProfile): string {
  const on = Object.entries(p.features)
    .filter(([, v]) => v)
    .map(([k]) => k);
  const sg = p.subgroupSizes ? `subgroup size ${p.subgroupSizes.min}..${p.subgroupSizes.max}` : 'no subgroups';
  return `${p.kind}, vendor ${p.vendor}, ${sg}, enabled: ${on.join(', ') || 'none'}`;
}
