/**
 * The kernel plan: which variant of each operation the model runs, resolved once at
 * load from the device profile (src/gpu/profile.ts), then from the environment
 * override, then from what the caller forces (tests loop over plans this way).
 *
 *   OPENCHAT_KERNELS=matvec=subgroup,fuse=norm+qkv,attention=split,kvCache=f16,submitLayers=4
 *
 * Variants are named by strategy, not by device. Any variant the device can run may be
 * forced on any device, so lavapipe checks the GPU variants' correctness too.
 */
import type { DeviceProfile } from '../gpu/profile.ts';
import { KV_CACHE_DTYPES } from './kv_cache.ts';

/** Decode attention: one tiled pass per query block, or split-K over the keys with a reduce pass (src/kernels/attention/). */
export type AttentionStrategy = 'tiled' | 'split';
export const ATTENTION_STRATEGIES: readonly AttentionStrategy[] = ['tiled', 'split'];

/** Attention of prefill chunks (src/kernels/attention/). */
export type PrefillAttentionStrategy = 'tiled' | 'flash';
export const PREFILL_ATTENTION_STRATEGIES: readonly PrefillAttentionStrategy[] = ['tiled', 'flash'];

/** The strategies of each operation. */
export const PLAN_CHOICES = {
  /**
   * Decode matrix-vector products (<= 8 tokens): matmul, SwiGLU's gate/up pair, lm_head.
   *  - rows: each invocation owns whole rows (a CPU SIMD lane per invocation: lavapipe).
   *  - subgroup: the lanes of a workgroup walk consecutive columns of a few rows (coalesced
   *    16-byte loads) and reduce with subgroupAdd plus workgroup memory (GPUs).
   *  - workgroup: the same split, reduced in workgroup memory only (no `subgroups` feature).
   */
  matvec: ['rows', 'subgroup', 'workgroup'],
  /**
   * Prefill matrix-matrix products (more than 8 tokens), src/kernels/matmul/gemm_*.wgsl.
   *  - regtile: lane groups share a row's columns, 8 tokens in registers, one reduction.
   *  - broadcast: each invocation owns whole rows for 16 tokens; the subgroup loads each x
   *    tile once and shares it by subgroupBroadcast (lavapipe: loads cost, shuffles do not).
   *  - tiled: token x row tiles staged in workgroup memory, a register block per invocation,
   *    K split when the row tiles cannot fill the GPU (GPUs).
   */
  gemm: ['regtile', 'broadcast', 'tiled'],
  /**
   * Decode dispatches merged (src/kernels/matmul/fused.ts), in the matvec strategy above:
   *  - none: rms_norm, then q_proj, k_proj and v_proj as three matvecs (and rms_norm, gate/up).
   *  - qkv: q_proj, k_proj and v_proj in one dispatch (the workgroup picks the matrix).
   *  - norm+qkv: that, and each block's rms_norm folded into its matvec (q/k/v, gate/up):
   *    every workgroup sums x^2 beside its products, so neither the norm dispatch nor h exist.
   */
  fuse: ['none', 'qkv', 'norm+qkv'],
  /** Attention (src/kernels/attention/): one tiled pass per query block, or split-K over the keys with a reduce pass. */
  attention: ATTENTION_STRATEGIES,
  /**
   * Attention for prefill chunks (more than one token), src/kernels/attention/:
   *  - tiled: one workgroup per query token (tiled.wgsl): K/V read once per token (lavapipe).
   *  - flash: blocks of query tokens x heads walk key tiles staged in workgroup memory (flash.wgsl).
   */
  prefillAttention: PREFILL_ATTENTION_STRATEGIES,
  /** Storage of the KV cache (src/kernels/kv_cache.ts; math stays f32). */
  kvCache: KV_CACHE_DTYPES,
} as const;

type Choice<K extends keyof typeof PLAN_CHOICES> = (typeof PLAN_CHOICES)[K][number];

export interface KernelPlan {
  matvec: Choice<'matvec'>;
  gemm: Choice<'gemm'>;
  fuse: Choice<'fuse'>;
  attention: Choice<'attention'>;
  prefillAttention: Choice<'prefillAttention'>;
  kvCache: Choice<'kvCache'>;
  /** Submit the command buffer every this many layers (the GPU starts while encoding goes on); 0: once per step. */
  submitLayers: number;
  /**
   * Most tokens per prefill chunk (the model's activation buffers are sized by it at load). Longer
   * chunks pay where weight re-reads no longer grow with the chunk (gemm=tiled: once per 64 tokens).
   */
  prefillChunk: number;
}

export type PlanKey = keyof KernelPlan;
const KEYS: PlanKey[] = ['matvec', 'gemm', 'fuse', 'attention', 'prefillAttention', 'kvCache', 'submitLayers', 'prefillChunk'];
/** The keys whose values are whole numbers, with the least each may be. */
const NUMBERS: Partial<Record<PlanKey, { min: number; meaning: string }>> = {
  submitLayers: { min: 0, meaning: 'layers (0 = once per step)' },
  prefillChunk: { min: 1, meaning: 'tokens, at least 1' },
};

/** The plan for a device when nothing is forced. */
export function defaultPlan(p: DeviceProfile): KernelPlan {
  if (p.kind === 'software') {
    // Measured fastest on lavapipe (bench/RESULTS.md, "Kernel plans", "Fused decode dispatches" and
    // "Prefill": q/k/v in one dispatch balances llvmpipe's threads better; the folded norm costs
    // loads there; gemm=broadcast is 4-5x regtile's prefill where subgroups have 8 lanes).
    const gemm = cannotRun(p, 'gemm', 'broadcast') === null ? 'broadcast' : 'regtile';
    return { matvec: 'rows', gemm, fuse: 'qkv', attention: 'tiled', prefillAttention: 'tiled', kvCache: 'f32', submitLayers: 0, prefillChunk: 128 };
  }
  return {
    matvec: p.features.subgroups ? 'subgroup' : 'workgroup',
    gemm: 'tiled',
    // Two dispatches per block instead of five, and no h round trip: chosen from the design note, not yet measured on a GPU.
    fuse: 'norm+qkv',
    // Split-K fills a large GPU at long contexts and runs the tiled pass itself when the context is short.
    attention: 'split',
    // K/V tiles shared by 64 query rows instead of read once per token: chosen by design, not yet measured on a GPU.
    prefillAttention: 'flash',
    // f16 halves the cache's memory and traffic but drifts past the f32 golden tolerance: opt-in.
    kvCache: 'f32',
    submitLayers: 4,
    prefillChunk: 512,
  };
}

/** Why `key=value` cannot run on this device, or null when it can. */
export function cannotRun(p: DeviceProfile, key: PlanKey, value: string): string | null {
  if (key === 'matvec' && value === 'subgroup' && !p.features.subgroups) {
    return `matvec=subgroup needs the WebGPU 'subgroups' feature, which this adapter (${p.adapter}) does not offer; use matvec=workgroup`;
  }
  if (key === 'gemm' && value === 'broadcast' && !(p.subgroupSizes && p.subgroupSizes.min >= 8)) {
    const have = p.subgroupSizes ? `subgroups of ${p.subgroupSizes.min}..${p.subgroupSizes.max} lanes` : "no 'subgroups' feature";
    return `gemm=broadcast needs subgroups of at least 8 lanes; this adapter (${p.adapter}) has ${have}; use gemm=regtile`;
  }
  return null;
}

export class KernelPlanError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KernelPlanError';
  }
}

/** Parses `key=value,key=value` (the OPENCHAT_KERNELS syntax); `source` names it in errors. */
export function parsePlan(text: string, source = 'OPENCHAT_KERNELS'): Partial<KernelPlan> {
  const out: Partial<Record<PlanKey, string | number>> = {};
  for (const item of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = item.indexOf('=');
    const key = (eq < 0 ? item : item.slice(0, eq)).trim();
    const value = eq < 0 ? '' : item.slice(eq + 1).trim();
    if (!(KEYS as string[]).includes(key)) {
      throw new KernelPlanError(`${source}: unknown key '${key}' in '${item}'; the keys are ${KEYS.join(', ')} (e.g. matvec=subgroup,attention=tiled)`);
    }
    const number = NUMBERS[key as PlanKey];
    if (number) {
      if (!/^\d+$/.test(value) || Number(value) < number.min) throw new KernelPlanError(`${source}: ${key} must be a whole number of ${number.meaning}; got '${value}'`);
      out[key as PlanKey] = Number(value);
      continue;
    }
    const choices = PLAN_CHOICES[key as keyof typeof PLAN_CHOICES] as readonly string[];
    if (!choices.includes(value)) {
      throw new KernelPlanError(`${source}: ${key}=${value || '(empty)'} is not a variant; ${key} is one of ${choices.join(', ')}`);
    }
    out[key as PlanKey] = value;
  }
  return out as Partial<KernelPlan>;
}

/**
 * The plan the model runs: the device's default, then OPENCHAT_KERNELS, then `forced`.
 * Throws KernelPlanError, naming the key, for anything this device cannot run.
 */
export function resolvePlan(p: DeviceProfile, forced: Partial<KernelPlan> = {}, env: string | undefined = process.env.OPENCHAT_KERNELS): KernelPlan {
  const plan: KernelPlan = { ...defaultPlan(p), ...(env ? parsePlan(env) : {}) };
  for (const [k, v] of Object.entries(forced)) if (v !== undefined) (plan as unknown as Record<string, unknown>)[k] = v;
  for (const key of KEYS) {
    const number = NUMBERS[key];
    if (number) {
      const v = plan[key] as number;
      if (!Number.isInteger(v) || v < number.min) throw new KernelPlanError(`${key} must be a whole number of ${number.meaning}; got ${v}`);
      continue;
    }
    const why = cannotRun(p, key, String(plan[key]));
    if (why) throw new KernelPlanError(`${env && env.includes(`${key}=`) ? 'OPENCHAT_KERNELS: ' : ''}${why}`);
  }
  return plan;
}

/** Every value of `key` this device can run (tests loop over these). */
export function runnable<K extends keyof typeof PLAN_CHOICES>(p: DeviceProfile, key: K): Choice<K>[] {
  return (PLAN_CHOICES[key] as readonly Choice<K>[]).filter((v) => cannotRun(p, key, v) === null);
}

/** One line, in the override's own syntax, so a printed plan can be pasted back. */
export function formatPlan(plan: KernelPlan): string {
  return KEYS.map((k) => `${k}=${plan[k]}`).join(',');
}
