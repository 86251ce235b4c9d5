/**
 * Prefill speed over quantized weights, the old kernels against the new, in one process:
 * every model is loaded once by the code of this tree (`new`) and by a copy of an older tree
 * (`old`, its src/ at OLD_SRC), then rounds of one prompt's prefill run model after model
 * (interleaved), so the machine's noise falls on all of them alike. Two copies of the code
 * mean two WebGPU devices in one process. Reports the median seconds of each prefill, tokens
 * per second, and each one's ratio to the new code's unquantized model.
 *
 *   git archive COMMIT src | tar -x -C .cache/old     # the old tree (gitignored)
 *   npx tsx bench/qgemm_prefill.ts --models f16:DIR,q8:DIR_Q8,q4:DIR_Q4 [--old .cache/old/src]
 *       [--tokens 128] [--rounds 3] [--kernels gemm=broadcast] [--old-for f16,q8,q4]
 *
 * --old-for: the models also run by the old code (default all; the old quantized prefill is
 * ~10x slower, so a second run may leave it out).
 *
 * DIR_Q8/DIR_Q4: folders written by `openchat quantize` (quantizing 1b at load takes minutes).
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { getGpu } from '../src/gpu/device.ts';
import { MistralModel } from '../src/model/model.ts';
import { parsePlan, formatPlan } from '../src/kernels/plan.ts';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : def;
};
const models = arg('--models', '').split(',').filter(Boolean).map((m) => {
  const [name, dir] = m.split(':');
  if (!name || !dir) throw new Error(`--models takes name:DIR,name:DIR, got ${m}`);
  return { name, dir };
});
if (models.length === 0) throw new Error('usage: npx tsx bench/qgemm_prefill.ts --models f16:DIR,q4:DIR2 [--old .cache/old/src] [--tokens 128] [--rounds 3]');
const oldSrc = resolve(arg('--old', '.cache/old/src'));
const tokens = Number(arg('--tokens', '128'));
const rounds = Number(arg('--rounds', '3'));
const plan = parsePlan(arg('--kernels', 'gemm=broadcast'), '--kernels');
const oldFor = new Set(arg('--old-for', models.map((m) => m.name).join(',')).split(','));

type Runner = { forward(ids: number[], opts: { kind: 'argmax' }): Promise<unknown>; reset(): void; destroy(): void; plan: Parameters<typeof formatPlan>[0] };
type Loader = { load(dir: string): Promise<Runner> };

const current: Loader = { load: async (dir) => MistralModel.load(await getGpu(), dir, { contextLength: 256, plan }) };
// The old tree's own modules (its own device): typed through this tree's, which they predate.
const oldModel = (await import(pathToFileURL(`${oldSrc}/model/model.ts`).href)) as { MistralModel: typeof MistralModel };
const oldDevice = (await import(pathToFileURL(`${oldSrc}/gpu/device.ts`).href)) as { getGpu: typeof getGpu };
const old: Loader = { load: async (dir) => oldModel.MistralModel.load(await oldDevice.getGpu(), dir, { contextLength: 256, plan }) };

const ids = Array.from({ length: tokens }, (_, i) => 1 + ((i * 7919) % 31000));
const runs: { name: string; model: Runner; times: number[] }[] = [];
for (const m of models) {
  for (const [code, loader] of [['old', old], ['new', current]] as const) {
    if (code === 'old' && !oldFor.has(m.name)) continue;
    const t0 = performance.now();
    const model = await loader.load(m.dir);
    const loaded = (performance.now() - t0) / 1000;
    // Warm-up: compiles every prefill pipeline.
    await model.forward(ids, { kind: 'argmax' });
    model.reset();
    console.error(`${code} ${m.name}: loaded in ${loaded.toFixed(1)} s, plan ${formatPlan(model.plan)}`);
    runs.push({ name: `${code} ${m.name}`, model, times: [] });
  }
}
for (let r = 0; r < rounds; r++) {
  for (const run of runs) {
    run.model.reset();
    const t0 = performance.now();
    await run.model.forward(ids, { kind: 'argmax' });
    run.times.push((performance.now() - t0) / 1000);
  }
  console.error(`round ${r + 1}: ${runs.map((x) => `${x.name} ${x.times[r]!.toFixed(2)} s`).join(', ')}`);
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const base = runs.find((x) => x.name === `new ${models[0]!.name}`)!;
console.log(`| code | weights | prefill ${tokens} tokens, s (median of ${rounds}) | tok/s | vs new ${models[0]!.name} |`);
console.log('|---|---|---:|---:|---:|');
for (const run of runs) {
  const t = median(run.times);
  const [code, name] = run.name.split(' ');
  console.log(`| ${code} | ${name} | ${t.toFixed(2)} | ${(tokens / t).toFixed(1)} | ${(median(base.times) / t).toFixed(2)}x |`);
}
for (const run of runs) run.model.destroy();
