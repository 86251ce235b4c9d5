/**
 * Our GGUF side against llama.cpp's own, through fixtures golden/gguf_peer.py made with it:
 *  - convert.json: what llama.cpp's convert_hf_to_gguf.py writes for golden/tiny-mistral (F16).
 *    ggufFromFolder must write the same bytes for every tensor: the pin of the q_proj/k_proj
 *    permutation (and so of ggufRowOf, which tests elsewhere show undoes it) that comes from
 *    their converter and not from our reading of it. Runs everywhere.
 *  - greedy.json: llama.cpp's greedy tokens and first-step logits on golden/ggml_blocks.py's
 *    quantized files, which are large and not committed: skipped where they are absent.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ggufFromFolder } from './gguf.testing.ts';
import { ggufConfig } from './gguf_model.ts';
import { CpuModel } from './cpu.ts';
import { GgufFile, type GgufValue } from '../util/gguf.ts';
import { gv, writeGguf } from '../util/gguf_writer.ts';
import { ggmlBytes, type GgmlType } from '../kernels/ggml/types.ts';

const GOLDEN = join(import.meta.dirname, '../../golden');
const REBUILD = '/usr/bin/python3 golden/ggml_blocks.py /tmp/peer /tmp/ggml-fixtures --work /tmp/gguf-peer; /usr/bin/python3 golden/gguf_peer.py /tmp/peer';

interface ConvertFixture {
  tensors: Array<{ name: string; type: GgmlType; dims: number[]; sha256: string }>;
  metadata: Record<string, { type: string; value: string | number | boolean }>;
}
interface GreedyFixture {
  prompt: number[];
  files: Array<{ file: string; sha256: string; tokens: number[]; margins: number[]; first_logits: number[] }>;
}
const convert = JSON.parse(readFileSync(join(GOLDEN, 'gguf-peer/convert.json'), 'utf8')) as ConvertFixture;
const greedy = JSON.parse(readFileSync(join(GOLDEN, 'gguf-peer/greedy.json'), 'utf8')) as GreedyFixture;

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const work = mkdtempSync(join(tmpdir(), 'gguf-peer-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function asValue(m: { type: string; value: string | number | boolean }): GgufValue {
  switch (m.type) {
    case 'uint32': return gv.u32(m.value as number);
    case 'int32': return gv.i32(m.value as number);
    case 'float32': return gv.f32(m.value as number);
    case 'bool': return gv.bool(m.value as boolean);
    case 'string': return gv.string(m.value as string);
    default: throw new Error(`convert.json: no writer here for GGUF type ${m.type}`);
  }
}

describe("ggufFromFolder against llama.cpp's convert_hf_to_gguf.py (golden/tiny-mistral, F16)", async () => {
  const ours = join(work, 'ours-f16.gguf');
  await ggufFromFolder(join(GOLDEN, 'tiny-mistral'), ours, { type: 'F16' });
  const file = await GgufFile.open(ours);
  afterAll(() => file.close());

  it('writes every tensor byte for byte as llama.cpp does: names, types, dims, data', async () => {
    expect([...file.tensors.keys()].sort()).toEqual(convert.tensors.map((t) => t.name).sort());
    for (const t of convert.tensors) {
      const info = file.tensor(t.name);
      expect({ name: t.name, type: info.type, dims: info.dims, sha256: sha256(await file.readTensor(t.name)) }).toEqual(t);
    }
  });

  // The config llama.cpp's metadata implies: a file with its keys and tensors of its shapes (zeros).
  const theirsPath = join(work, 'theirs-meta.gguf');
  await writeGguf(theirsPath, {
    metadata: Object.entries(convert.metadata).map(([k, m]) => [k, asValue(m)] as [string, GgufValue]),
    tensors: convert.tensors.map((t) => ({ name: t.name, type: t.type, dims: t.dims, data: () => new Uint8Array(ggmlBytes(t.type, t.dims.reduce((a, b) => a * b, 1))) })),
  });
  const theirs = await GgufFile.open(theirsPath);
  afterAll(() => theirs.close());

  it("reads the same config from our file as from llama.cpp's metadata", async () => {
    const ours = ggufConfig(file);
    expect(ours).toEqual(ggufConfig(theirs));
    // OpenChat's <|end_of_turn|>, which llama.cpp takes from config.json (2 was written here before 2e3aace).
    expect(ours.eos_token_id).toEqual([32000]);
    expect(ours.vocab_size).toBe(32002);
  });
});

const PEER_DIR = process.env.OPENCHAT_GGUF_PEER ?? '/tmp/gguf-peer';

function fileSha(path: string): string | null {
  return existsSync(path) ? sha256(readFileSync(path)) : null;
}

function logSoftmax(l: ArrayLike<number>): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < l.length; i++) m = Math.max(m, l[i]!);
  let s = 0;
  for (let i = 0; i < l.length; i++) s += Math.exp(l[i]! - m);
  const z = m + Math.log(s);
  return Float64Array.from(l, (x) => x - z);
}

/** KL(p || q) of two logit vectors, in nats. */
function klLogits(p: ArrayLike<number>, q: ArrayLike<number>): number {
  const lp = logSoftmax(p);
  const lq = logSoftmax(q);
  let kl = 0;
  for (let v = 0; v < lp.length; v++) kl += Math.exp(lp[v]!) * (lp[v]! - lq[v]!);
  return kl;
}

/*
 * Bounds, from a run of 2026-12-07 (llama.cpp CPU backend, x86): llama.cpp rounds activations
 * to Q8 (F16 for F16 weights) before its dot products, so its logits are not ours. First-step
 * KL(llama.cpp || ours) was 1.7e-8 for F16 and 5e-6..1.1e-5 for the quantized files; max |logit
 * difference| 4.4e-4 (F16), up to 1.4e-2 (quantized). Logits that differ by at most e can swap
 * their order only if their margin is under 2e: with e = 0.025 (1.8x the largest measured), a
 * step whose llama.cpp top-1 margin exceeds 0.05 must agree. Q5_1's step 7 (margin 0.004) is
 * the one step that disagreed, below the rule. The KL bound is 4x the largest measured.
 */
const MARGIN = 0.05;
const KL_BOUND = 5e-5;
const LOGIT_BOUND = 0.025;

describe("CpuModel against llama.cpp's greedy decoding (golden/ggml_blocks.py's files)", () => {
  for (const f of greedy.files) {
    const path = join(PEER_DIR, f.file);
    const have = fileSha(path);
    const why = have === null ? `${path} is absent` : have !== f.sha256 ? `${path} is not the file greedy.json was made from (SHA-256 differs)` : null;
    if (why) console.log(`gguf.peer.test: ${why}; skipping it. Rebuild: ${REBUILD}`);
    it.skipIf(why !== null)(`${f.file}: tokens where llama.cpp's top-1 margin exceeds ${MARGIN}, first-step KL under ${KL_BOUND}`, async () => {
      const model = await CpuModel.load(path);
      const V = model.config.vocab_size;
      let logits: Float32Array = model.forward(greedy.prompt).slice(-V);
      expect(klLogits(f.first_logits, logits)).toBeLessThan(KL_BOUND);
      for (let v = 0; v < V; v++) expect(Math.abs(logits[v]! - f.first_logits[v]!)).toBeLessThan(LOGIT_BOUND);
      let clear = 0;
      // Teacher-forced on llama.cpp's tokens, so every step compares the same context.
      f.tokens.forEach((token, s) => {
        let best = 0;
        for (let v = 1; v < V; v++) if (logits[v]! > logits[best]!) best = v;
        if (f.margins[s]! > MARGIN) {
          expect(best, `step ${s}`).toBe(token);
          clear++;
        }
        logits = model.forward([token]);
      });
      // Random weights give flat distributions: 4 to 16 of the 16 steps were clear per file.
      expect(clear).toBeGreaterThanOrEqual(f.tokens.length / 4);
    });
  }
});
