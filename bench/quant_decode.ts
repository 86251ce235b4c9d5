/**
 * Decode speed of the quantized formats against the checkpoint's own format, on one device,
 * in one process: every model is loaded once, then rounds of greedy decode steps run model
 * after model (interleaved), so the machine's noise falls on all of them alike. Reports the
 * median seconds per token of each, the ratio to the unquantized model, the weights' bytes on
 * the device, and the peak RSS after each load.
 *
 *   npx tsx bench/quant_decode.ts DIR [--formats none,q8,q4,dir:DIR2] [--tokens 8] [--rounds 3]
 *
 * `none` is DIR as stored, q8/q4 quantize DIR at load, `dir:DIR2` loads another folder as stored
 * (one written by `openchat quantize`: no quantizing at load, which takes minutes on 2 cores).
 */
import { getGpu } from '../src/gpu/device.ts';
import { MistralModel } from '../src/model/model.ts';
import { resourceUsage } from 'node:process';
import type { QuantFormat } from '../src/gpu/buffers.ts';
import { formatPlan } from '../src/kernels/plan.ts';

const dir = process.argv[2];
if (!dir) throw new Error('usage: npx tsx bench/quant_decode.ts DIR [--formats none,q8,q4] [--tokens N] [--rounds R]');
const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : def;
};
const formats = arg('--formats', 'none,q8,q4').split(',');
const tokens = Number(arg('--tokens', '8'));
const rounds = Number(arg('--rounds', '3'));

const gpu = await getGpu();
const models: { name: string; model: MistralModel; loadSeconds: number; rssGB: number; times: number[] }[] = [];
for (const f of formats) {
  const t0 = performance.now();
  const other = f.startsWith('dir:') ? f.slice(4) : null;
  const model = await MistralModel.load(gpu, other ?? dir, { contextLength: 256, quantize: other || f === 'none' ? undefined : (f as QuantFormat) });
  const loadSeconds = (performance.now() - t0) / 1000;
  const rssGB = (resourceUsage().maxRSS * 1024) / 1e9;
  console.error(`loaded ${f} in ${loadSeconds.toFixed(1)} s: weights ${(model.weightDeviceBytes / 1e9).toFixed(3)} GB on the device, peak RSS so far ${rssGB.toFixed(2)} GB, plan ${formatPlan(model.plan)}`);
  // Warm-up: compiles every pipeline of prefill and decode.
  await model.forward([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], { kind: 'argmax' });
  await model.forward([5], { kind: 'argmax' });
  models.push({ name: f, model, loadSeconds, rssGB, times: [] });
}
for (let r = 0; r < rounds; r++) {
  for (const m of models) {
    m.model.reset();
    let next = (await m.model.forward([1, 2, 3, 4], { kind: 'argmax' })).argmax!;
    const t0 = performance.now();
    for (let i = 0; i < tokens; i++) next = (await m.model.forward([next], { kind: 'argmax' })).argmax!;
    m.times.push((performance.now() - t0) / 1000 / tokens);
  }
  console.error(`round ${r + 1}: ${models.map((m) => `${m.name} ${(m.times[r]! * 1000).toFixed(0)} ms/token`).join(', ')}`);
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const base = median(models[0]!.times);
console.log(`| weights | on the device | decode ms/token (median of ${rounds} x ${tokens}) | tok/s | speed vs ${models[0]!.name} |`);
console.log('|---|---:|---:|---:|---:|');
for (const m of models) {
  const t = median(m.times);
  console.log(`| ${m.name === 'none' ? 'as stored' : m.name} | ${(m.model.weightDeviceBytes / 1e9).toFixed(3)} GB | ${(t * 1000).toFixed(0)} | ${(1 / t).toFixed(2)} | ${(base / t).toFixed(2)}x |`);
}
for (const m of models) m.model.destroy();
