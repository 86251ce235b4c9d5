import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CpuModel } from './cpu.ts';
import { Checkpoint as Checkpoint, writeSafetensors, type TensorSpec } from './safetensors.ts';
import { folderQuantization, quantizationFor, quantizedMatrices } from './quantized.ts';
import { loadConfig } from './config.ts';
import { quantizeCheckpoint } from './quantize.ts';
import { QUANT_FORMATS } from '../gpu/buffers.ts';
import { quantizeRows, vocabFormats } from '../kernels/quant.ref.ts';
import { decodeToF32 } from '../util/half.ts';

const TINY = new URL('../../golden/tiny-mistral/', import.meta.url).pathname;
const made: string[] = [];
afterAll(() => made.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('quantized folders (openchat quantize)', () => {
  for (const format of QUANT_FORMATS) {
    it(`${format}: the folder holds the device layout and runs exactly as quantizing at load`, async () => {
      const out = mkdtempSync(join(tmpdir(), `quant-${format}-`));
      made.push(out);
      await quantizeCheckpoint(TINY, out, format);
      const v = vocabFormats(format);
      expect(await folderQuantization(out)).toEqual({ format, ...v });
      const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
      expect(cfg.quantization_config).toEqual({ quant_method: 'openchat-webgpu', format, group_size: 32, embed_tokens: v.embed_tokens, lm_head: v.lm_head });
      const ckpt = await Checkpoint.open(out);
      // q_proj [64, 64]: codes [64, 64 or 32] U8, scales [64, 8] F16 (2 per row, padded to 8).
      expect(ckpt.get('model.layers.0.self_attn.q_proj.weight')).toMatchObject({ dtype: 'u8', shape: [64, format === 'q8' ? 64 : 32] });
      expect(ckpt.get('model.layers.0.self_attn.q_proj.scales')).toMatchObject({ dtype: 'f16', shape: [64, 8] });
      // embed_tokens [32002, 64] in its vocabFormats() format, planes as any quantized matrix.
      expect(ckpt.get('model.embed_tokens.weight')).toMatchObject({ dtype: 'u8', shape: [32002, v.embed_tokens === 'q8' ? 64 : 32] });
      expect(ckpt.get('model.embed_tokens.scales')).toMatchObject({ dtype: 'f16', shape: [32002, 8] });
      ckpt.close();
      const ids = [1, 415, 2936, 9060, 285, 1142];
      const fromFolder = (await CpuModel.load(out)).forward(ids);
      const atLoad = (await CpuModel.load(TINY, { quantize: format })).forward(ids);
      expect(fromFolder).toEqual(atLoad);
    });
  }

  it('a folder written before embed_tokens was quantized (stored as float, no embed_tokens key) still loads as it is', async () => {
    const fresh = mkdtempSync(join(tmpdir(), 'quant-new-'));
    const old = mkdtempSync(join(tmpdir(), 'quant-old-'));
    made.push(fresh, old);
    await quantizeCheckpoint(TINY, fresh, 'q4');
    // Rewrite it as the earlier writer did: embed_tokens as the source's f16 tensor, lm_head q8.
    const src = await Checkpoint.open(TINY);
    const q = await Checkpoint.open(fresh);
    const [vocab, hidden] = src.get('lm_head.weight').shape as [number, number];
    const head = quantizeRows(decodeToF32(await src.read('lm_head.weight'), 'f16'), vocab, hidden, 'q8');
    const specs: TensorSpec[] = [];
    for (const [name, e] of q.tensors) {
      if (name === 'model.embed_tokens.scales') continue;
      if (name === 'model.embed_tokens.weight') specs.push({ name, dtype: 'F16', shape: [vocab, hidden] });
      else if (name === 'lm_head.weight') specs.push({ name, dtype: 'U8', shape: [vocab, hidden] });
      else specs.push({ name, dtype: e.dtype === 'u8' ? 'U8' : 'F16', shape: e.shape });
    }
    const bytes = async (s: TensorSpec) =>
      s.name === 'model.embed_tokens.weight' ? await src.read(s.name) : s.name === 'lm_head.weight' ? head.codes : s.name === 'lm_head.scales' ? new Uint8Array(head.scales.buffer) : await q.read(s.name);
    await writeSafetensors(join(old, 'model.safetensors'), specs, bytes);
    src.close();
    q.close();
    const cfg = JSON.parse(readFileSync(join(fresh, 'config.json'), 'utf8'));
    delete cfg.quantization_config.embed_tokens;
    cfg.quantization_config.lm_head = 'q8';
    writeFileSync(join(old, 'config.json'), JSON.stringify(cfg));
    expect(await folderQuantization(old)).toEqual({ format: 'q4', embed_tokens: null, lm_head: 'q8' });
    const ids = [1, 415, 2936, 9060, 285, 1142];
    expect((await CpuModel.load(old)).forward(ids)).toEqual((await CpuModel.load(TINY, { quantize: 'q4', embed: null, lmHead: 'q8' })).forward(ids));
    // A config that names another format than the tensors hold is refused, saying what to do.
    cfg.quantization_config.embed_tokens = 'q8';
    writeFileSync(join(old, 'config.json'), JSON.stringify(cfg));
    await expect(CpuModel.load(old)).rejects.toThrow(/'model\.embed_tokens\.weight' is F16 .*rewrite it with openchat quantize/);
    cfg.quantization_config.embed_tokens = 'q3';
    writeFileSync(join(old, 'config.json'), JSON.stringify(cfg));
    await expect(CpuModel.load(old)).rejects.toThrow(/quantization_config\.embed_tokens is "q3".*rewrite the folder with openchat quantize/);
  });

  it('with tie_word_embeddings the one vocabulary matrix takes the more precise format', async () => {
    const tied = { ...await loadConfig(TINY), tie_word_embeddings: true };
    for (const format of QUANT_FORMATS) {
      const q = quantizationFor(tied, format);
      expect(q).toEqual({ format, embed_tokens: 'q8', lm_head: null });
      const m = quantizedMatrices(tied, q);
      expect(m.get('model.embed_tokens.weight')).toBe('q8');
      expect(m.has('lm_head.weight')).toBe(false);
      expect(m.get('model.layers.1.mlp.down_proj.weight')).toBe(format);
    }
  });

  it('refuses to quantize a folder twice or to another format, with what to do', async () => {
    const out = mkdtempSync(join(tmpdir(), 'quant-twice-'));
    made.push(out);
    await quantizeCheckpoint(TINY, out, 'q4');
    await expect(quantizeCheckpoint(out, out + '-again', 'q8')).rejects.toThrow(/already quantized/);
    await expect(CpuModel.load(out, { quantize: 'q8' })).rejects.toThrow(/already quantized to q4/);
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    cfg.quantization_config.group_size = 64;
    writeFileSync(join(out, 'config.json'), JSON.stringify(cfg));
    await expect(CpuModel.load(out)).rejects.toThrow(/group_size 32/);
  });
});
