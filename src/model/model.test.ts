/**
 * Loading broken checkpoints into the WebGPU and CPU models: every failure names
 * the file and the field or tensor, and says what to do. The golden fixture,
 * copied and damaged one way per test.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { MistralModel } from './model.ts';
import { CpuModel } from './cpu.ts';
import { KVCache } from './kv_cache.ts';
import { loadConfig, parseConfig } from './config.ts';
import { Checkpoint, writeSafetensors } from './safetensors.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed } from '../util/testing.ts';
import { decodeToF32, encodeFromF32 } from '../util/half.ts';
import { resolvePlan } from '../kernels/plan.ts';

const GOLDEN = new URL('../../golden/tiny-mistral/', import.meta.url).pathname;
const goldenConfig = JSON.parse(readFileSync(join(GOLDEN, 'config.json'), 'utf8')) as Record<string, unknown>;
const root = mkdtempSync(join(tmpdir(), 'openchat-model-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A copy of the golden folder under `name`, with `config` as its config.json. */
function copyGolden(name: string, config: Record<string, unknown> = goldenConfig): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(GOLDEN, 'model.safetensors'), join(dir, 'model.safetensors'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

describe('context length against what the device can hold', () => {
  it('max_position_embeddings 1e9 is refused before loading, naming config.json and the largest context that fits (was: Invalid typed array length)', async () => {
    const gpu = await getGpu();
    const dir = copyGolden('huge-context', { ...goldenConfig, max_position_embeddings: 1e9 });
    await expect(MistralModel.load(gpu, dir)).rejects.toThrow(
      new RegExp(
        `^${join(dir, 'config.json')}: max_position_embeddings 1000000000 is more context than this device can hold: ` +
          'the RoPE table \\(head_dim 16 f32 values per position\\) must fit one storage binding of \\d+ bytes, so at most \\d+ tokens\\. ' +
          'Pass a smaller context length \\(at most \\d+\\)',
      ),
    );
    // A context that fits is fine with the same config.
    const model = await MistralModel.load(gpu, dir, { contextLength: 64 });
    expect(model.contextLength).toBe(64);
    // The chunk is cut to the context, and the plan (which bench and info print) says so.
    expect(model.maxChunk).toBe(Math.min(64, resolvePlan(gpu.profile).prefillChunk));
    expect(model.plan.prefillChunk).toBe(model.maxChunk);
    model.destroy();
  });

  it('without a sliding window the KV cache (a slot per position) bounds it, for a context asked for too', async () => {
    const gpu = await getGpu();
    const { sliding_window: _w, ...rest } = goldenConfig;
    const llama = { ...rest, architectures: ['LlamaForCausalLM'], model_type: 'llama' };
    const limits = gpu.report.limits;
    const binding = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
    const tooMany = Math.floor(binding / KVCache.slotBytes(parseConfig(llama), 'f32')) + 1;
    const dir = copyGolden('llama-context', { ...llama, max_position_embeddings: tooMany });
    await expect(MistralModel.load(gpu, dir, { contextLength: tooMany })).rejects.toThrow(
      `a context of ${tooMany} tokens is more than this device can hold: ` +
        `each layer's KV cache (a slot per position) must fit one storage binding of ${binding} bytes, so at most ${tooMany - 1} tokens`,
    );
  });
});

describe('non-finite weights and outputs', () => {
  it('a NaN or Inf anywhere in the weights is refused at load by both models, naming file, tensor and element (was: "logit 0 is NaN" at generation)', async () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const ckpt = await Checkpoint.open(GOLDEN);
    const targets = [
      { name: 'model.layers.1.mlp.down_proj.weight', bits: 0x7e00 }, // f16 NaN
      { name: 'model.embed_tokens.weight', bits: 0xfc00 }, // f16 -Inf
      { name: 'model.layers.0.input_layernorm.weight', bits: 0x7c00 }, // +Inf in a norm (loaded as a vector)
    ];
    const gpu = await getGpu();
    for (const [n, t] of targets.entries()) {
      const e = ckpt.get(t.name);
      const element = rng.int(0, e.byteLength / 2);
      const dir = copyGolden(`nonfinite-${n}`);
      const bytes = readFileSync(join(dir, 'model.safetensors'));
      bytes.writeUInt16LE(t.bits, e.offset + element * 2);
      writeFileSync(join(dir, 'model.safetensors'), bytes);
      const want = `${join(dir, 'model.safetensors')}: tensor '${t.name}' holds a non-finite value (Inf or NaN) at element ${element}`;
      await expect(MistralModel.load(gpu, dir), `seed ${seed}`).rejects.toThrow(want);
      await expect(CpuModel.load(dir), `seed ${seed}`).rejects.toThrow(want);
    }
    ckpt.close();
  });

  it('finite weights whose activations overflow float32 give an error saying so at the forward pass', async () => {
    // An f32 copy whose final norm weight is 1e38: the normed hidden state overflows, the logits are not finite.
    const dir = join(root, 'overflow');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), JSON.stringify(goldenConfig));
    const src = await Checkpoint.open(GOLDEN);
    const specs = [...src.tensors.values()].map((e) => ({ name: e.name, dtype: 'F32' as const, shape: e.shape }));
    await writeSafetensors(join(dir, 'model.safetensors'), specs, async (s) => {
      const values = decodeToF32(await src.read(s.name), src.float(s.name).dtype);
      if (s.name === 'model.norm.weight') values.fill(1e38);
      return encodeFromF32(values, 'f32');
    });
    src.close();
    const model = await MistralModel.load(await getGpu(), dir);
    try {
      await expect(model.forward([1, 420, 6316], { kind: 'logits' })).rejects.toThrow(
        new RegExp(`non-finite logit \\(.*\\) at position 2: its weights in ${dir} are finite, so the activations overflowed float32`),
      );
      model.reset();
      await expect(model.forward([1, 420], { kind: 'all-logits' })).rejects.toThrow(/at position 0: /);
      model.reset();
      await expect(model.forward([1, 420], { kind: 'topk', k: 3 })).rejects.toThrow(/non-finite logit/);
    } finally {
      model.destroy();
    }
  });
});

describe('KV cache bookkeeping', () => {
  it('records half a million token ids in one append (a spread into push overflows the stack)', async () => {
    const cache = new KVCache(await getGpu(), await loadConfig(GOLDEN), 16, 'f32');
    try {
      const ids = Array.from({ length: 500_000 }, (_, i) => i % 32000);
      expect(() => [].push(...(ids as never[]))).toThrow(RangeError); // what the old bookkeeping did
      cache.append(ids);
      expect(cache.length()).toBe(500_000);
      cache.truncate(3);
      expect(cache.length()).toBe(3);
    } finally {
      cache.destroy();
    }
  });
});
