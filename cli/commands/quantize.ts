/** `openchat quantize`: writes a quantized copy of a model folder (src/model/quantized.ts). */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { quantizeCheckpoint } from '../../src/model/quantize.ts';
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
    .description('write a quantized copy of a model folder (q8: 8.5 bits per weight, q4: 4.5), which every command loads directly')
    .requiredOption('--model <dir>', 'Hugging Face model folder with f16, bf16 or f32 weights')
    .requiredOption('--out <dir>', 'folder to write (config.json, model.safetensors, tokenizer files)')
    .requiredOption('--format <format>', 'q8 or q4', quantizeOption)
    .action((opts: QuantizeOptions) => {
      if (resolve(opts.model) === resolve(opts.out)) throw new Error('--out must be another folder than --model (the source is read while the copy is written)');
      const t0 = performance.now();
      const bytes = quantizeCheckpoint(opts.model, opts.out, opts.format, (line) => process.stderr.write(line + '\n'));
      process.stderr.write(`wrote ${opts.out}: ${opts.format}, ${(bytes / 1e9).toFixed(3)} GB in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    });
}
