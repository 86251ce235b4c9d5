/**
 * GGUF files as models, end to end on the device: a file converted from the bundled folder gives
 * the folder's logits bit for bit (the converter's q/k permutation undone at load, the
 * metadata read as config.json is); a file of each block format gives the plain-TypeScript
 * forward pass over its dequantized weights (CpuModel) to f32 noise; what cannot be read is one
 * line naming the file, the tensor and the type.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { MistralModel } from './model.ts';
import { CpuModel } from './cpu.ts';
import { loadConfig } from './config.ts';
import { GGUF_MIXES, ggufFromFolder, syntheticGguf, usesMoreBits, type SyntheticGgufShape, type SyntheticGgufTypes } from './gguf.testing.ts';
import { Prompts } from '../prompts.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, maxRelError } from '../util/testing.ts';
import { gv, writeGguf } from '../util/gguf_writer.ts';
import { GgufFile } from '../util/gguf.ts';
import { resolvePlan, type KernelPlan } from '../kernels/plan.ts';

const GOLDEN = new URL('../../golden/tiny-mistral/', import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), 'openchat-gguf-model-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Logits of the last `compare` positions of `ids`: a prompt through prefill steps, then decode steps one token at a time. */
async function logitsOf(model: MistralModel, prompt: number[], decode: number[]): Promise<Float32Array[]> {
  const out = [(await model.forward(prompt, { kind: 'all-logits' })).logits!];
  for (const id of decode) out.push((await model.forward([id], { kind: 'all-logits' })).logits!);
  model.reset();
  return out;
}

function randomIds(rng: Rng, n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => 3 + Math.floor(rng.next() * (vocab - 3)));
}

describe('a GGUF converted from the bundled folder (F16, rows permuted as llama.cpp writes them)', () => {
  let file: string;
  beforeAll(async () => {
    file = join(root, 'tiny-mistral-f16.gguf');
    await ggufFromFolder(GOLDEN, file, { type: 'F16' });
  });

  it("has the folder's config, but no sliding window unless asked (llama.cpp runs these files with full attention)", async () => {
    const folder = await loadConfig(GOLDEN);
    const gguf = await loadConfig(file);
    expect(gguf.sliding_window).toBeNull();
    expect(gguf.architecture).toBe('LlamaForCausalLM');
    const { sliding_window: _w, architecture: _a, torch_dtype: _t, rms_norm_eps: eps, ...same } = folder;
    const { sliding_window: _w2, architecture: _a2, torch_dtype: _t2, rms_norm_eps: eps2, ...sameGguf } = gguf;
    expect(sameGguf).toEqual(same);
    expect(eps2).toBe(Math.fround(eps)); // GGUF stores it as f32
    expect(await loadConfig(file, undefined, { slidingWindow: 16 })).toMatchObject({ sliding_window: 16, architecture: 'MistralForCausalLM' });
  });

  it("gives the folder's logits bit for bit with --sliding-window 16, prefill and decode, and the folder's token ids", async () => {
    const gpu = await getGpu();
    const rng = new Rng(freshSeed());
    const prompt = randomIds(rng, 23, 32000);
    const decode = randomIds(rng, 4, 32000);
    const a = await MistralModel.load(gpu, GOLDEN);
    const b = await MistralModel.load(gpu, file, { slidingWindow: 16 });
    try {
      const [la, lb] = [await logitsOf(a, prompt, decode), await logitsOf(b, prompt, decode)];
      la.forEach((l, k) => expect(lb[k], `step ${k}`).toEqual(l));
    } finally {
      a.destroy();
      b.destroy();
    }
    const [pf, pg] = [await Prompts.load(GOLDEN), await Prompts.load(file)];
    const chat = [{ role: 'user' as const, content: 'Hello <|end_of_turn|> wörld, 12345 ```code```' }];
    expect(pg.encodeChat(chat)).toEqual(pf.encodeChat(chat));
    expect(pg.encodeRaw(' two  spaces\tand a tab')).toEqual(pf.encodeRaw(' two  spaces\tand a tab'));
    expect(pg.tokenizer.stopIds).toContain(32000);
  });

  it('runs full attention without the override: past the window, the CPU reference of the file (not the folder) is matched', async () => {
    const gpu = await getGpu();
    const rng = new Rng(freshSeed());
    const prompt = randomIds(rng, 30, 32000);
    const model = await MistralModel.load(gpu, file, { plan: { kvCache: 'f32' } });
    try {
      const got = (await model.forward(prompt, { kind: 'all-logits' })).logits!;
      const ref = (await CpuModel.load(file)).forward(prompt);
      expect(maxRelError(got, ref)).toBeLessThan(2e-3); // f16 weights read as f16 by both; f32 sums in other orders
      const windowed = (await CpuModel.load(GOLDEN)).forward(prompt);
      expect(maxRelError(got, windowed)).toBeGreaterThan(1e-2); // the window matters past 16 tokens
    } finally {
      model.destroy();
    }
  });
});

/** Small enough for tests, every matrix dimension a multiple of 256 (K-quants' super-blocks). */
const SHAPE: SyntheticGgufShape = { vocab_size: 1000, hidden_size: 256, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 256 };

/**
 * Per format: the GPU model's logits against CpuModel over the same file (both dequantize the
 * same blocks to the same f32 weights; only the sums' order differs). Relative to the largest
 * logit; f32 sums of 256-512 products in other orders, through two layers.
 */
const TOL = 2e-4;

const FORMATS: { name: string; types: SyntheticGgufTypes }[] = [
  // Of two layers, llama-quantize's Q4_K_M gives layer 1's v_proj and down_proj Q6_K: both formats within one kind of matrix.
  { name: "Q4_K_M (llama-quantize's mix: Q4_K; output and layer 1's v_proj and down_proj Q6_K)", types: GGUF_MIXES.Q4_K_M },
  // (F32/F16/BF16 are the dense path every folder runs; the F16 file above loads through this loader.)
  ...(['Q5_K', 'Q3_K', 'Q2_K', 'Q5_0', 'Q4_1', 'Q5_1', 'Q8_0', 'Q4_0'] as const).map((t) => ({ name: t, types: { layers: t, embed: t, output: t } })),
  { name: 'Q6_K, output tied to token_embd', types: { layers: 'Q6_K', embed: 'Q6_K', output: null } },
];

/**
 * Q4_K_M under the lavapipe plan and the GPU plan whole (its matvec, gemm, split and flash
 * attention); the other formats under matvec=rows and gemm=regtile, the kernels
 * src/kernels/ggml/matmul.test.ts compiles for every format (a cold shader cache pays seconds
 * per pipeline).
 */
function plans(format: string): { name: string; plan: Partial<KernelPlan> }[] {
  if (!format.startsWith('Q4_K_M')) return [{ name: 'matvec=rows, gemm=regtile', plan: { matvec: 'rows', gemm: 'regtile', kvCache: 'f32' } }];
  return [
    { name: 'device plan', plan: { kvCache: 'f32' } },
    { name: 'GPU plan', plan: { matvec: 'subgroup', gemm: 'tiled', attention: 'split', prefillAttention: 'flash', kvCache: 'f32' } },
  ];
}

describe("llama-quantize's _M mixes", () => {
  it('give more bits to the layers use_more_bits picks: the first and last eighth, and every third between', () => {
    const picked = (n: number) => Array.from({ length: n }, (_, i) => i).filter((i) => usesMoreBits(i, n));
    // Mistral 7B's 32 layers, TinyLlama's 22, and the 2 of the file below (llama.cpp's rule, worked by hand).
    expect(picked(32)).toEqual([0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
    expect(picked(22)).toEqual([0, 1, 4, 7, 10, 13, 16, 19, 20, 21]);
    expect(picked(2)).toEqual([1]);
  });
});

for (const f of FORMATS) {
  describe(`a ${f.name} GGUF of random blocks`, () => {
    let file: string;
    let cpu: CpuModel;
    beforeAll(async () => {
      file = join(root, `${f.name.split(' ')[0]}.gguf`);
      await syntheticGguf(file, SHAPE, f.types, freshSeed());
      cpu = await CpuModel.load(file);
    });

    for (const p of plans(f.name)) {
      it(`gives the CPU reference's logits over its dequantized weights (${p.name}: prefill of 13, decode of 3)`, async () => {
        const gpu = await getGpu();
        const plan = resolvePlan(gpu.profile, p.plan);
        const rng = new Rng(freshSeed());
        const prompt = randomIds(rng, 13, SHAPE.vocab_size!);
        const decode = randomIds(rng, 3, SHAPE.vocab_size!);
        const model = await MistralModel.load(gpu, file, { plan, attentionSegmentKeys: plan.attention === 'split' ? 5 : undefined });
        try {
          const got = await logitsOf(model, prompt, decode);
          cpu.reset();
          const ref = [cpu.forward(prompt), ...decode.map((id) => cpu.forward([id]))];
          got.forEach((g, k) => expect(maxRelError(g, ref[k]!), `step ${k}`).toBeLessThan(TOL));
        } finally {
          model.destroy();
        }
      });
    }
  });
}

describe('what a GGUF file cannot be', () => {
  /** A copy of a small valid model with one change to its metadata or tensors. */
  async function variant(name: string, change: (meta: Array<[string, ReturnType<typeof gv.u32>]>, tensors: { name: string; typeId?: number }[]) => void): Promise<string> {
    const base = join(root, 'base.gguf');
    await syntheticGguf(base, { ...SHAPE, num_hidden_layers: 1 }, { layers: 'Q8_0', embed: 'Q8_0', output: 'Q8_0' }, 7);
    const src = await GgufFile.open(base);
    try {
      const meta = [...src.metadata.entries()] as Array<[string, ReturnType<typeof gv.u32>]>;
      const tensors = [];
      for (const t of src.tensors.values()) tensors.push({ name: t.name, typeId: t.typeId, type: t.type!, dims: t.dims, data: await src.readTensor(t.name) });
      change(meta, tensors);
      const out = join(root, name);
      await writeGguf(out, { metadata: meta, tensors });
      return out;
    } finally {
      src.close();
    }
  }

  it('another architecture, a mixture of experts, a missing or misshapen tensor, a tensor left over: one line each, naming the file', async () => {
    const cases: [string, Parameters<typeof variant>[1], RegExp][] = [
      ['gemma.gguf', (m) => { m.find(([k]) => k === 'general.architecture')![1] = gv.string('gemma') as never; }, /general\.architecture is 'gemma'; this engine runs llama and mistral/],
      ['moe.gguf', (m) => { m.push(['llama.expert_count', gv.u32(8)]); }, /llama\.expert_count is 8: mixture-of-experts models \(Mixtral\) are not supported/],
      ['missing.gguf', (_m, t) => { t.splice(t.findIndex((x) => x.name === 'blk.0.ffn_up.weight'), 1); }, /blk\.0\.ffn_up\.weight/],
      ['extra.gguf', (_m, t) => { t.push({ ...t.find((x) => x.name === 'output_norm.weight')!, name: 'blk.0.attn_q.bias' }); }, /would not use: blk\.0\.attn_q\.bias/],
    ];
    for (const [name, change, message] of cases) {
      const path = await variant(name, change);
      let err: unknown;
      try {
        await MistralModel.load(await getGpu(), path);
      } catch (e) {
        err = e;
      }
      expect(err, name).toBeInstanceOf(Error);
      expect((err as Error).message, name).toMatch(message);
      expect((err as Error).message, name).toContain(path);
      expect((err as Error).message.split('\n'), name).toHaveLength(1);
    }
  });

  it("a tensor of a type this engine does not read (IQ2_XS): one line naming the file, the tensor and the type, from every command's loader", async () => {
    const path = await variant('iq.gguf', () => {});
    // Patch blk.0.attn_v.weight's type id in its tensor info (name, n_dims u32, dims u64 each, type u32) to IQ2_XS (17).
    const bytes = readFileSync(path);
    const name = Buffer.from('blk.0.attn_v.weight');
    const at = bytes.indexOf(name) + name.length;
    const dims = bytes.readUInt32LE(at);
    bytes.writeUInt32LE(17, at + 4 + 8 * dims);
    writeFileSync(path, bytes);
    const message = /iq\.gguf: tensor blk\.0\.attn_v\.weight is IQ2_XS, which this engine does not read/;
    await expect(MistralModel.load(await getGpu(), path)).rejects.toThrow(message);
    await expect(CpuModel.load(path)).rejects.toThrow(message);
  });
});
