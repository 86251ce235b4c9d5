/**
 * Where a prefill chunk's GPU time goes, per kernel, for each of several kernel plans on one
 * loaded model (`openchat bench --profile` profiles decode steps; this profiles prefill):
 *
 *   npx tsx bench/prefill-profile.ts /tmp/ck1b 128 'gemm=regtile;gemm=broadcast' [rounds]
 *
 * Each round runs one prompt of the given length under every plan in turn (interleaved, so a
 * comparison shares whatever else the machine is doing) with the timestamp profiler attached
 * (one pass per dispatch: a little slower than an unprofiled prefill). Prints, per plan, the
 * kernels by GPU time summed over the rounds, and each round's wall time.
 */
import { getGpu } from '../src/gpu/device.ts';
import { GpuProfiler } from '../src/gpu/profiler.ts';
import { MistralModel } from '../src/model/model.ts';
import { formatPlan, parsePlan } from '../src/kernels/plan.ts';
import { Rng } from '../src/util/rng.ts';

const [dir, lengthArg = '128', plansArg = '', roundsArg = '1'] = process.argv.slice(2);
if (!dir) throw new Error('usage: npx tsx bench/prefill-profile.ts MODEL_DIR [prompt length] [plans ;-separated] [rounds]');
const length = Number(lengthArg);
const plans = plansArg.split(';').map((p) => parsePlan(p, '--plans'));
const gpu = await getGpu();
const model = await MistralModel.load(gpu, dir, { plan: plans[0] });
const rng = new Rng(Number(process.env.SEED ?? 1));
const ids = Array.from({ length }, () => rng.int(0, model.config.vocab_size));
// Compile every plan's pipelines outside the timings.
for (const plan of plans) {
  model.replan(plan);
  model.reset();
  await model.forward(ids, { kind: 'argmax' });
}
const profilers = plans.map(() => [] as GpuProfiler[]);
const walls = plans.map(() => [] as number[]);
for (let r = 0; r < Number(roundsArg); r++) {
  for (let pi = 0; pi < plans.length; pi++) {
    model.replan(plans[pi]!);
    model.reset();
    const prof = GpuProfiler.attach(gpu);
    const t = performance.now();
    try {
      await model.forward(ids, { kind: 'argmax' });
      await prof.endStep();
    } finally {
      prof.detach();
    }
    walls[pi]!.push((performance.now() - t) / 1000);
    profilers[pi]!.push(prof);
  }
}
plans.forEach((plan, pi) => {
  model.replan(plan);
  const byLabel = new Map<string, { calls: number; seconds: number }>();
  for (const prof of profilers[pi]!) {
    for (const k of prof.kernels()) {
      const e = byLabel.get(k.label) ?? { calls: 0, seconds: 0 };
      e.calls += k.calls;
      e.seconds += k.seconds;
      byLabel.set(k.label, e);
    }
  }
  const total = [...byLabel.values()].reduce((a, b) => a + b.seconds, 0);
  console.log(`\nplan ${formatPlan(model.plan)}: prefill ${length}, wall per round ${walls[pi]!.map((w) => `${w.toFixed(2)} s`).join(', ')}; GPU ${total.toFixed(2)} s summed`);
  for (const [label, e] of [...byLabel].sort((a, b) => b[1].seconds - a[1].seconds)) {
    console.log(`  ${((100 * e.seconds) / total).toFixed(1).padStart(5)}%  ${e.seconds.toFixed(3).padStart(8)} s  ${String(e.calls).padStart(4)} calls  ${label}`);
  }
});
model.destroy();
