/** Option parsers shared by the commands: each names the option and its range in its error. */
import { InvalidArgumentError, type Command } from 'commander';
import { knownCondition } from '../../src/tokenizer/index.ts';
import { QUANT_FORMATS, type QuantFormat } from '../../src/gpu/buffers.ts';

export function intOption(name: string, min: number, max: number): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be an integer in [${min}, ${max}]; got "${value}"`);
    }
    return n;
  };
}

export function numberOption(name: string, min: number, max: number, minExclusive = false): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n > max || (minExclusive ? n <= min : n < min)) {
      throw new InvalidArgumentError(`${name} must be a number in ${minExclusive ? '(' : '['}${min}, ${max}]; got "${value}"`);
    }
    return n;
  };
}

/** --condition: one of OpenChat's conditions, case-insensitively. */
export function conditionOption(value: string): string {
  const c = knownCondition(value);
  if (c === null) throw new InvalidArgumentError(`--condition must be 'GPT4 Correct' or 'code'; got "${value}"`);
  return c;
}

/** --quantize: a quantized weight format (src/kernels/quant.ref.ts). */
export function quantizeOption(value: string): QuantFormat {
  const f = QUANT_FORMATS.find((q) => q === value.trim().toLowerCase());
  if (!f) throw new InvalidArgumentError(`--quantize must be one of ${QUANT_FORMATS.join(', ')} (8.5 or 4.5 bits per weight); got "${value}"`);
  return f;
}

/** Adds --quantize, the same flag in generate, chat, logits, serve and bench. */
export function addQuantizeOption(cmd: Command): Command {
  return cmd.option('--quantize <format>', "quantize the weight matrices to q8 or q4 while loading (a folder written by 'openchat quantize' is already quantized)", quantizeOption);
}

/** The --model help of every command that loads a model. */
export const MODEL_HELP = 'a Hugging Face model folder or a GGUF file (default: $OPENCHAT_MODEL, else the bundled tiny random-weight model)';

/** Adds --sliding-window: over the model's own (a GGUF file has none; llama.cpp runs it with full attention). */
export function addSlidingWindowOption(cmd: Command): Command {
  return cmd.option('--sliding-window <keys>', "keys each query attends to, over the model's own (GGUF files of Mistral have none: full attention, as llama.cpp runs them; Mistral 7B was trained with 4096); 0 for full attention", intOption('--sliding-window', 0, 2 ** 24));
}
