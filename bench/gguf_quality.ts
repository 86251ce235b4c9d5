/**
 * Quality of llama.cpp's GGUF formats beside the project's own q8/q4: the CPU reference forward
 * pass (plain dequantization, dequant.ref.ts, so the weights' effect and not a kernel's) over each
 * of golden/ggml_blocks.py's tiny-<TYPE>.gguf files (llama-quantize from one F16 file) against
 * that F16 file. Per format: mean and max over positions of KL(F16 || format) of the next-token
 * distributions, top-1 agreement with F16, and the bits per weight of the matrices (2-D tensors:
 * bytes x 8 / weights, scales included; for q8/q4 the device layout's, with the matrices they
 * leave unquantized at F16's 16).
 *
 * The tiny file has random weights and a 64-token vocabulary: nothing averages quantization noise
 * away, so the figures rank the formats on random weights, not on a trained model.
 *
 *   npx tsx bench/gguf_quality.ts [--dir /tmp/gguf-peer] [--prompts 4] [--length 128] [--seed N]
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CpuModel } from '../src/model/cpu.ts';
import { quantizationFor, quantizedMatrices } from '../src/model/quantized.ts';
import { quantLayout, type QuantFormat } from '../src/gpu/buffers.ts';
import { GgufFile } from '../src/util/gguf.ts';
import { ggufConfig } from '../src/model/gguf_model.ts';
import { logSoftmax } from '../src/sampling/logprobs.testing.ts';
import { Rng } from '../src/util/rng.ts';

const TYPES = ['Q8_0', 'Q6_K', 'Q5_1', 'Q5_K_M', 'Q5_0', 'Q4_1', 'Q4_K_M', 'Q4_0', 'Q3_K_M', 'Q2_K'];

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: process.env.OPENCHAT_GGUF_PEER ?? '/tmp/gguf-peer' },
    prompts: { type: 'string', default: '4' },
    length: { type: 'string', default: '128' },
    seed: { type: 'string' },
  },
});
const dir = values.dir!;
const seed = values.seed ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31);
const reference = join(dir, 'tiny-f16.gguf');
if (!existsSync(reference)) {
  console.error(`${reference} is absent; make the files with: /usr/bin/python3 golden/ggml_blocks.py LLAMA_CPP_DIR /tmp/ggml-fixtures --work ${dir}`);
  process.exit(1);
}

/** Bits per weight of a GGUF file's matrices, as stored. */
async function fileBits(path: string): Promise<number> {
  const f = await GgufFile.open(path);
  try {
    let bytes = 0;
    let weights = 0;
    for (const t of f.tensors.values()) {
      if (t.dims.length !== 2) continue;
      bytes += t.byteLength!;
      weights += t.count;
    }
    return (8 * bytes) / weights;
  } finally {
    f.close();
  }
}

/** Bits per weight of the F16 file's matrices under the project's `format` (quantizationFor's choice per matrix). */
async function projectBits(path: string, format: QuantFormat): Promise<number> {
  const f = await GgufFile.open(path);
  try {
    const config = ggufConfig(f);
    const chosen = quantizedMatrices(config, quantizationFor(config, format));
    let bits = 0;
    let weights = 0;
    for (const t of f.tensors.values()) {
      if (t.dims.length !== 2) continue;
      weights += t.count;
    }
    let quantized = 0;
    for (const [name, fmt] of chosen) {
      const t = f.tensor(ggufNameOf(name));
      const [cols, rows] = t.dims as [number, number];
      bits += 8 * rows * quantLayout(fmt, cols).rowBytes;
      quantized += t.count;
    }
    return (bits + 16 * (weights - quantized)) / weights;
  } finally {
    f.close();
  }
}

/** ggml's tensor name of an HF one (the few this bench meets). */
function ggufNameOf(hf: string): string {
  if (hf === 'model.embed_tokens.weight') return 'token_embd.weight';
  if (hf === 'lm_head.weight') return 'output.weight';
  const m = /^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj\.weight$/.exec(hf);
  if (!m) throw new Error(`gguf_quality: no ggml name for ${hf}`);
  const short: Record<string, string> = { q: 'attn_q', k: 'attn_k', v: 'attn_v', o: 'attn_output', gate: 'ffn_gate', up: 'ffn_up', down: 'ffn_down' };
  return `blk.${m[1]}.${short[m[3]!]}.weight`;
}

const ref = await CpuModel.load(reference);
const V = ref.config.vocab_size;
const rng = new Rng(seed);
const prompts = Array.from({ length: Number(values.prompts) }, () => [1, ...Array.from({ length: Number(values.length) - 1 }, () => rng.int(3, V))]);
const refLogits = prompts.map((p) => {
  ref.reset();
  return ref.forward(p);
});

function drift(model: CpuModel): { klMean: number; klMax: number; top1: number } {
  let kl = 0;
  let klMax = 0;
  let agree = 0;
  let n = 0;
  prompts.forEach((p, k) => {
    model.reset();
    const got = model.forward(p);
    const want = refLogits[k]!;
    for (let t = 0; t < p.length; t++) {
      const lp = logSoftmax(want.subarray(t * V, (t + 1) * V));
      const lq = logSoftmax(got.subarray(t * V, (t + 1) * V));
      let d = 0;
      let a = 0;
      let b = 0;
      for (let v = 0; v < V; v++) {
        d += Math.exp(lp[v]!) * (lp[v]! - lq[v]!);
        if (lp[v]! > lp[a]!) a = v;
        if (lq[v]! > lq[b]!) b = v;
      }
      kl += d;
      klMax = Math.max(klMax, d);
      agree += a === b ? 1 : 0;
      n++;
    }
  });
  return { klMean: kl / n, klMax, top1: agree / n };
}

console.log(`gguf_quality: ${dir}, ${prompts.length} random prompts of ${prompts[0]!.length} tokens (seed ${seed}), ${prompts.length * prompts[0]!.length} positions; reference ${reference}`);
console.log('| format | bits/weight (matrices) | KL(F16 ‖ format) mean | KL max | top-1 agreement with F16 |');
console.log('|---|---:|---:|---:|---:|');
const row = (name: string, bits: number, d: { klMean: number; klMax: number; top1: number }) =>
  console.log(`| ${name} | ${bits.toFixed(2)} | ${d.klMean.toExponential(2)} | ${d.klMax.toExponential(2)} | ${(100 * d.top1).toFixed(1)}% |`);
for (const type of TYPES) {
  const path = join(dir, `tiny-${type}.gguf`);
  if (!existsSync(path)) {
    console.log(`| ${type} | (${path} absent) | | | |`);
    continue;
  }
  row(`GGUF ${type}`, await fileBits(path), drift(await CpuModel.load(path)));
}
for (const format of ['q8', 'q4'] as const) row(`project ${format} (from the F16 file)`, await projectBits(reference, format), drift(await CpuModel.load(reference, { quantize: format })));
