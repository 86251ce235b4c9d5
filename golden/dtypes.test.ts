/**
 * The same network stored other ways. OpenChat 3.5 ships bf16, and real
 * checkpoints come sharded; the golden fixture is one f16 file. We rewrite it:
 *  - as f32, sharded into 3 files with an index: every f16 value is exact in
 *    f32, so Hugging Face's golden logits must still come out;
 *  - as bf16 (rounded from the f16 values), sharded: a different network, so
 *    no HF logits exist for it, but the WebGPU pass (which keeps bf16 as 16-bit
 *    words and widens them in the kernels) must agree with the CPU reference
 *    pass (which widens them on the host).
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getGpu } from '../src/gpu/device.ts';
import { MistralModel } from '../src/model/model.ts';
import { CpuModel } from '../src/model/cpu.ts';
import { Checkpoint, writeSafetensors, type TensorSpec } from '../src/model/safetensors.ts';
import { decodeToF32, encodeFromF32 } from '../src/util/half.ts';

const GOLDEN = new URL('./tiny-mistral/', import.meta.url).pathname;
const manifest = JSON.parse(readFileSync(join(GOLDEN, 'golden.json'), 'utf8')) as {
  cases: { id: string; input_ids: number[]; logits: { file: string } }[];
};
const caseD = manifest.cases.find((c) => c.id === 'd')!;
const work = mkdtempSync(join(tmpdir(), 'openchat-dtypes-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Rewrites the golden checkpoint in `dtype`, split into `shards` files with an index. */
async function rewrite(name: string, dtype: 'F32' | 'BF16', shards: number): Promise<string> {
  const dir = join(work, name);
  const src = await Checkpoint.open(GOLDEN);
  const names = [...src.tensors.keys()].sort();
  const per = Math.ceil(names.length / shards);
  const weightMap: Record<string, string> = {};
  mkdirSync(dir, { recursive: true });
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const part = names.slice(s * per, (s + 1) * per);
    const specs: TensorSpec[] = part.map((n) => ({ name: n, dtype, shape: src.get(n).shape }));
    await writeSafetensors(join(dir, file), specs, async (spec) => {
      const values = decodeToF32(await src.read(spec.name), src.float(spec.name).dtype);
      return encodeFromF32(values, dtype === 'F32' ? 'f32' : 'bf16');
    });
    for (const n of part) weightMap[n] = file;
  }
  src.close();
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  copyFileSync(join(GOLDEN, 'config.json'), join(dir, 'config.json'));
  return dir;
}

function maxAbs(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    m = Number.isNaN(d) ? Infinity : Math.max(m, d);
  }
  return m;
}

describe('checkpoint dtypes and sharding', () => {
  let f32Dir: string;
  let bf16Dir: string;
  beforeAll(async () => {
    f32Dir = await rewrite('f32', 'F32', 3);
    bf16Dir = await rewrite('bf16', 'BF16', 2);
  });

  it('an f32, 3-shard copy of the golden checkpoint reproduces the Hugging Face logits', async () => {
    const model = await MistralModel.load(await getGpu(), f32Dir);
    const logits = (await model.forward(caseD.input_ids, { kind: 'all-logits' })).logits!;
    const buf = readFileSync(join(GOLDEN, caseD.logits.file));
    const golden = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    // Same tolerance as golden.test.ts: 1e-5 of the logits' range (~15).
    expect(maxAbs(logits, golden)).toBeLessThan(1.5e-4);
    model.destroy();
  });

  it('a bf16, 2-shard checkpoint runs exactly (bf16 widened in the kernels) and matches the CPU reference', async () => {
    const model = await MistralModel.load(await getGpu(), bf16Dir);
    const gpuLogits = (await model.forward(caseD.input_ids, { kind: 'all-logits' })).logits!;
    const cpuLogits = (await CpuModel.load(bf16Dir)).forward(caseD.input_ids);
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of cpuLogits) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    expect(maxAbs(gpuLogits, cpuLogits) / (hi - lo)).toBeLessThan(1e-5);
    // And it is a different network from the f16 one: rounding to bf16 moved the logits.
    const buf = readFileSync(join(GOLDEN, caseD.logits.file));
    expect(maxAbs(gpuLogits, new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4))).toBeGreaterThan(1e-3);
    model.destroy();
  });

  it('as LlamaForCausalLM (no sliding window: a KV slot per position), token-by-token WebGPU decode matches the CPU reference', async () => {
    const dir = join(work, 'llama');
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(GOLDEN, 'model.safetensors'), join(dir, 'model.safetensors'));
    const { sliding_window: _w, ...config } = JSON.parse(readFileSync(join(GOLDEN, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, architectures: ['LlamaForCausalLM'], model_type: 'llama' }));
    const model = await MistralModel.load(await getGpu(), dir, { contextLength: 128 });
    expect(model.kvCacheSlots).toBe(128);
    const vocab = model.config.vocab_size;
    const gpuLogits = new Float32Array(caseD.input_ids.length * vocab);
    for (let i = 0; i < caseD.input_ids.length; i++) {
      gpuLogits.set((await model.forward([caseD.input_ids[i]!], { kind: 'logits' })).logits!, i * vocab);
    }
    const cpuLogits = (await CpuModel.load(dir)).forward(caseD.input_ids);
    expect(maxAbs(gpuLogits, cpuLogits)).toBeLessThan(1.5e-4);
    // Without the window the late positions differ from the Mistral golden by several logits.
    const buf = readFileSync(join(GOLDEN, caseD.logits.file));
    expect(maxAbs(gpuLogits, new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4))).toBeGreaterThan(1);
    model.destroy();
  });
});
