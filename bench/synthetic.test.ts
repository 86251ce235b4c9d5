/**
 * The `tiny` synthetic checkpoint, written sharded in two files, loads through
 * the index and runs: finite logits, greedy tokens inside the vocabulary. And
 * the benchmark harness runs end to end on it with short settings. The tokenizer
 * written beside a synthetic checkpoint fits its vocabulary (the 1b shape's 32000).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getGpu } from '../src/gpu/device.ts';
import { MistralModel } from '../src/model/model.ts';
import { Checkpoint } from '../src/model/safetensors.ts';
import { expectedTensors } from '../src/model/config.ts';
import { decodeToF32 } from '../src/util/half.ts';
import { Rng } from '../src/util/rng.ts';
import { freshSeed } from '../src/util/testing.ts';
import { Prompts } from '../src/generator.ts';
import { SYNTHETIC_CONFIGS, writeSyntheticCheckpoint, writeSyntheticTokenizer, type WrittenCheckpoint } from './synthetic.ts';
import { runBenchmark, formatResult } from './e2e.ts';

const seed = freshSeed();
let dir: string;
let written: WrittenCheckpoint;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'synthetic-tiny-'));
  // 5 MB of the ~8.4 MB: embed_tokens and the layers fill the first shard, lm_head starts the second.
  written = await writeSyntheticCheckpoint(dir, 'tiny', { maxShardBytes: 5e6, seed });
});

afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
});

describe(`synthetic tiny checkpoint (seed ${seed})`, () => {
  it('is sharded like a Hugging Face export, every expected tensor present with the weight statistics intended', async () => {
    expect(written.files).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8')) as {
      metadata: { total_size: number };
      weight_map: Record<string, string>;
    };
    expect(index.weight_map['lm_head.weight']).toBe('model-00002-of-00002.safetensors');
    expect(index.weight_map['model.embed_tokens.weight']).toBe('model-00001-of-00002.safetensors');
    expect(existsSync(join(dir, 'model.safetensors'))).toBe(false);

    const ckpt = await Checkpoint.open(dir);
    try {
      const want = expectedTensors(written.config);
      expect([...ckpt.tensors.keys()].sort()).toEqual([...want.keys()].sort());
      expect(ckpt.totalBytes).toBe(index.metadata.total_size);
      // A projection [out, in] holds N(0, 1/sqrt(in)) values; norms hold ones.
      const down = decodeToF32(await ckpt.read('model.layers.1.mlp.down_proj.weight'), 'f16');
      let sum = 0;
      let sq = 0;
      for (const v of down) {
        sum += v;
        sq += v * v;
      }
      const std = Math.sqrt(sq / down.length);
      expect(Math.abs(sum / down.length), `seed ${seed}`).toBeLessThan(0.01);
      expect(std, `seed ${seed}`).toBeGreaterThan(0.9 / Math.sqrt(192));
      expect(std, `seed ${seed}`).toBeLessThan(1.1 / Math.sqrt(192));
      expect([...decodeToF32(await ckpt.read('model.norm.weight'), 'f16')].every((v) => v === 1)).toBe(true);
      // Two tensors of one shape are not copies of each other.
      const q0 = await ckpt.read('model.layers.0.self_attn.q_proj.weight');
      const q1 = await ckpt.read('model.layers.1.self_attn.q_proj.weight');
      expect(Buffer.compare(q0, q1)).not.toBe(0);
    } finally {
      ckpt.close();
    }
  });

  it('loads through the index and runs: finite logits, greedy decode stays in the vocabulary', async () => {
    const gpu = await getGpu();
    const model = await MistralModel.load(gpu, dir, { contextLength: 64 });
    try {
      const rng = new Rng(seed);
      const vocab = written.config.vocab_size;
      const ids = Array.from({ length: 7 }, () => rng.int(0, vocab));
      const { logits } = await model.forward(ids, { kind: 'all-logits' });
      expect(logits!.length).toBe(ids.length * vocab);
      const bad = logits!.findIndex((v) => !Number.isFinite(v));
      expect(bad, `seed ${seed}: non-finite logit at ${bad}`).toBe(-1);
      // Random weights still give a spread of logits, not a constant row.
      const row = logits!.subarray(0, vocab);
      expect(Math.max(...row) - Math.min(...row), `seed ${seed}`).toBeGreaterThan(0.1);

      let token = (await model.forward([rng.int(0, vocab)], { kind: 'argmax' })).argmax!;
      for (let i = 0; i < 3; i++) {
        expect(Number.isInteger(token) && token >= 0 && token < vocab, `seed ${seed}: token ${token}`).toBe(true);
        token = (await model.forward([token], { kind: 'argmax' })).argmax!;
      }
      expect(model.position).toBe(ids.length + 4);
    } finally {
      model.destroy();
    }
  });

  it('runs the end-to-end benchmark with short settings and reports consistent figures', async () => {
    const gpu = await getGpu();
    const r = await runBenchmark(gpu, dir, { promptLengths: [5, 20], decodeTokens: 3, seed, copyBytes: 4 * 2 ** 20, maxChunk: 16, streams: [2] });
    expect(r.model.weightBytes).toBe(written.totalBytes);
    expect(r.model.maxChunk).toBe(16);
    expect(r.prefill.map((p) => p.promptTokens)).toEqual([5, 20]);
    for (const f of [r.load, r.decode.tokensPerSecond, ...r.prefill.flatMap((p) => [p.timeToFirstToken, p.tokensPerSecond])]) {
      expect(f.measured > 0 && f.limit > 0 && Number.isFinite(f.ratio), JSON.stringify(f)).toBe(true);
    }
    const p20 = r.prefill[1]!;
    // Time to first token and prefill rate are one measurement seen two ways.
    expect(p20.tokensPerSecond.measured * p20.timeToFirstToken.measured).toBeCloseTo(20, 6);
    expect(p20.tokensPerSecond.ratio).toBeCloseTo(p20.timeToFirstToken.ratio, 6);
    expect(r.decode.samples.length).toBe(3);
    expect(r.memory.peakRss.measured).toBeGreaterThan(r.memory.deviceBytes);
    expect(r.roofline.bandwidth).toBe(Math.max(r.roofline.copyBytesPerSecond, r.roofline.kernelCopyBytesPerSecond));
    // The limits are the better of the two roofline runs.
    expect(r.roofline.flopsPerSecond).toBe(Math.max(...r.rooflineRuns.map((x) => x.flopsPerSecond)));
    expect(r.roofline.bandwidth).toBe(Math.max(...r.rooflineRuns.map((x) => x.bandwidth)));
    const table = formatResult(r);
    expect(table).toContain('| decode tokens/s, 3 tokens after 5 |');
    expect(table).toContain('time to first token, 20-token prompt');
    expect(r.streams.map((x) => [x.streams, x.requests, x.ttftSamples])).toEqual([[2, 2, 2]]);
  });

  it("writes a tokenizer of the config's vocabulary: the Generator's check refuses a 32000-token model without one, and takes it with one", async () => {
    const small = mkdtempSync(join(tmpdir(), 'synthetic-v32000-'));
    try {
      // The 1b shape's vocabulary and EOS on the tiny shape: OpenChat's pieces without its two added tokens.
      await writeSyntheticCheckpoint(small, { ...SYNTHETIC_CONFIGS.tiny, vocab_size: 32000, eos_token_id: 2 }, { seed });
      await expect(Prompts.load(small)).rejects.toThrow(/the tokenizer has 32002 tokens but the model's vocab_size is 32000/);
      expect(await writeSyntheticTokenizer(small, 32000)).toEqual(['tokenizer.json', 'tokenizer_config.json']);
      const prompts = await Prompts.load(small);
      try {
        expect(prompts.tokenizer.vocabSize).toBe(32000);
        expect(prompts.tokenizer.eotId).toBeNull();
        expect(prompts.tokenizer.stopIds).toEqual([2]);
        expect(prompts.encodeRaw('the sea').every((id) => id < 32000)).toBe(true);
      } finally {
        prompts.tokenizer.close();
      }
    } finally {
      rmSync(small, { recursive: true, force: true });
    }
  });
});
