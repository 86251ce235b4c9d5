import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CpuModel } from './cpu.ts';
import { Checkpoint } from './safetensors.ts';
import { folderQuantization } from './quantized.ts';
import { quantizeCheckpoint } from './quantize.ts';
import { QUANT_FORMATS } from '../gpu/buffers.ts';

const TINY = new URL('../../golden/tiny-mistral/', import.meta.url).pathname;
const made: string[] = [];
afterAll(() => made.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('quantized folders (openchat quantize)', () => {
  for (const format of QUANT_FORMATS) {
    it(`${format}: the folder holds the device layout and runs exactly as quantizing at load`, () => {
      const out = mkdtempSync(join(tmpdir(), `quant-${format}-`));
      made.push(out);
      quantizeCheckpoint(TINY, out, format);
      expect(folderQuantization(out)).toBe(format);
      const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
      expect(cfg.quantization_config).toEqual({ quant_method: 'openchat-webgpu', format, group_size: 32, lm_head: 'q8' });
      const ckpt = Checkpoint.open(out);
      // q_proj [64, 64]: codes [64, 64 or 32] U8, scales [64, 8] F16 (2 per row, padded to 8).
      expect(ckpt.get('model.layers.0.self_attn.q_proj.weight')).toMatchObject({ dtype: 'u8', shape: [64, format === 'q8' ? 64 : 32] });
      expect(ckpt.get('model.layers.0.self_attn.q_proj.scales')).toMatchObject({ dtype: 'f16', shape: [64, 8] });
      expect(ckpt.get('model.embed_tokens.weight').dtype).toBe('f16');
      ckpt.close();
      const ids = [1, 415, 2936, 9060, 285, 1142];
      const fromFolder = CpuModel.load(out).forward(ids);
      const atLoad = CpuModel.load(TINY, { quantize: format }).forward(ids);
      expect(fromFolder).toEqual(atLoad);
    });
  }

  it('refuses to quantize a folder twice or to another format, with what to do', () => {
    const out = mkdtempSync(join(tmpdir(), 'quant-twice-'));
    made.push(out);
    quantizeCheckpoint(TINY, out, 'q4');
    expect(() => quantizeCheckpoint(out, out + '-again', 'q8')).toThrow(/already quantized/);
    expect(() => CpuModel.load(out, { quantize: 'q8' })).toThrow(/already quantized to q4/);
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    cfg.quantization_config.group_size = 64;
    writeFileSync(join(out, 'config.json'), JSON.stringify(cfg));
    expect(() => CpuModel.load(out)).toThrow(/group_size 32/);
  });
});
