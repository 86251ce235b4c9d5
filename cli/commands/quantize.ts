/** `openchat quantize`: writes a quantized copy of a model folder (src/model/quantized.ts) or of a GGUF file (src/model/gguf_quantize.ts). */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { quantizeCheckpoint } from '../../src/model/quantize.ts';
import { quantizeGguf } from '../../src/model/gguf_quantize.ts';
import { isGgufPath } from '../../src/util/gguf.ts';
import type { QuantFormat } from '../../src/gpu/buffers.ts';
import { quantizeOption } from './options.ts';

interface QuantizeOptions {
  model: string;
  out: string;
  format: QuantFormat;
}

export function registerQuantize(program: Command): void {
  program
    .command('quantize')
    .description('write a quantized copy of a model folder or GGUF file (q8: 8.5 bits per weight, q4: 4.5), which every command loads directly')
    .requiredOption('--model <path>', 'Hugging Face model folder, or GGUF file, with f16, bf16 or f32 weights')
    .requiredOption('--out <path>', 'folder to write (config.json, model.safetensors, tokenizer files); for a GGUF --model, the .gguf file to write (Q8_0 or Q4_0, which llama.cpp reads too)')
    .requiredOption('--format <format>', 'q8 or q4', quantizeOption)
    .action(async (opts: QuantizeOptions) => {
      if (resolve(opts.model) === resolve(opts.out)) throw new Error('--out must be another folder than --model (the source is read while the copy is written)');
      const t0 = performance.now();
      const log = (line: string) => process.stderr.write(line + '\n');
      const gguf = isGgufPath(opts.model);
      if (gguf !== isGgufPath(opts.out)) throw new Error(gguf ? '--out must name a .gguf file for a GGUF --model' : '--out must name a folder for a folder --model (a .gguf --out needs a .gguf --model)');
      const bytes = gguf ? await quantizeGguf(opts.model, opts.out, opts.format, log) : await quantizeCheckpoint(opts.model, opts.out, opts.format, log);
      process.stderr.write(`wrote ${opts.out}: ${opts.format}, ${(bytes / 1e9).toFixed(3)} GB in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    });
}
