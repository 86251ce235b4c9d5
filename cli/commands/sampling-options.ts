/**
 * What `openchat generate` and `openchat chat` share: the model and sampling
 * flags, turning them into validated SamplingParams, loading the Generator,
 * and the line on stderr after each answer.
 *
 * Flags are read as plain strings and checked here, inside the command's action,
 * rather than by Commander's per-option parsers: an error thrown from the action
 * becomes one line on stderr (`openchat: ...`, see cli/main.ts), while a parser's
 * error would be followed by the whole help text. The ranges themselves live in
 * one place only, validateSamplingParams, so the CLI and the HTTP server agree.
 */
import { loadProgress } from './progress.ts';
import { addQuantizeOption, addSlidingWindowOption, conditionOption, MODEL_HELP } from './options.ts';
import type { QuantFormat } from '../../src/gpu/buffers.ts';
import { basename, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { BUNDLED_MODEL_DIR, Generator, resolveModelDir, type FinishReason, type GenerateOptions, type GenerationEvent, type Timings } from '../../src/generator.ts';
import {
  DEFAULT_SAMPLING,
  MAX_STOP_STRINGS,
  SamplingParamError,
  validateSamplingParams,
  type SamplingParams,
} from '../../src/sampling/params.ts';
import { intOption } from './options.ts';

/**
 * The CLI's defaults. OpenChat's own server (ochat's OpenAI-style API) samples at
 * temperature 0.7 with top_p 1, so a chat in the terminal reads like one there;
 * every other filter and penalty is off (DEFAULT_SAMPLING). `--temperature 0`
 * is greedy decoding. max_tokens stays unset here: without --max-tokens an answer is capped at
 * DEFAULT_CLI_MAX_TOKENS when it is generated (withDefaultMaxTokens), not when the flags are read,
 * because that cap must shrink to what the context leaves after the prompt.
 */
export const CLI_SAMPLING_DEFAULTS: SamplingParams = Object.freeze({
  ...DEFAULT_SAMPLING,
  temperature: 0.7,
  top_p: 1,
});

/**
 * New tokens per answer without --max-tokens: Workers AI's default max_tokens. A random-weight
 * model (the bundled one) rarely ends its turn, and a real one that loops would otherwise write
 * until the context is full.
 */
export const DEFAULT_CLI_MAX_TOKENS = 256;

/**
 * The parameters an answer runs with: `params` as the flags gave them, with max_tokens
 * DEFAULT_CLI_MAX_TOKENS when --max-tokens was not given, or what the context leaves after the
 * prompt when that is less. A default must never make a prompt that fits fail (an explicit
 * --max-tokens that does not fit is refused, as before).
 */
export function withDefaultMaxTokens(params: SamplingParams, promptTokens: number, contextLength: number): SamplingParams {
  if (params.max_tokens !== null) return params;
  return { ...params, max_tokens: Math.max(1, Math.min(DEFAULT_CLI_MAX_TOKENS, contextLength - promptTokens)) };
}

/** Commander's view of the flags: every value is still the string the user typed. */
export interface SamplingFlags {
  temperature?: string;
  topP?: string;
  topK?: string;
  minP?: string;
  repetitionPenalty?: string;
  presencePenalty?: string;
  frequencyPenalty?: string;
  seed?: string;
  maxTokens?: string;
  stop: string[];
  n?: string;
}

/** --context, and its old name --context-length (serve's, kept hidden so that scripts still work). */
export interface ContextFlags {
  context?: string;
  contextLength?: string;
  quantize?: QuantFormat;
  slidingWindow?: number;
}

export interface ModelFlags extends ContextFlags {
  model?: string;
  /** A LoRA adapter folder (PEFT layout) to run under. */
  lora?: string;
  system?: string;
  condition?: string;
}

/** CLI flag <-> SamplingParams field, in the order the help lists them. */
const NUMERIC_FLAGS: ReadonlyArray<[flag: string, key: keyof SamplingFlags, field: keyof SamplingParams, help: string]> = [
  ['--temperature', 'temperature', 'temperature', 'softmax temperature in [0, 2]; 0 is greedy (default 0.7)'],
  ['--top-p', 'topP', 'top_p', 'nucleus sampling mass in (0, 1]; 1 is off'],
  ['--top-k', 'topK', 'top_k', 'keep the k most likely tokens, integer in [0, 1000]; 0 is off'],
  ['--min-p', 'minP', 'min_p', 'keep tokens with p >= min_p * p_max, in [0, 1]; 0 is off'],
  ['--repetition-penalty', 'repetitionPenalty', 'repetition_penalty', 'multiplicative penalty on seen tokens, in [0.01, 5]; 1 is off'],
  ['--presence-penalty', 'presencePenalty', 'presence_penalty', 'additive penalty on generated tokens, in [-2, 2]; 0 is off'],
  ['--frequency-penalty', 'frequencyPenalty', 'frequency_penalty', 'additive penalty per occurrence, in [-2, 2]; 0 is off'],
  ['--seed', 'seed', 'seed', 'seed for the sampler (default: a fresh one, reported on stderr)'],
  ['--max-tokens', 'maxTokens', 'max_tokens', `most new tokens per answer (default ${DEFAULT_CLI_MAX_TOKENS}, fewer when the context has less room)`],
];

/** Adds --context (and the hidden alias --context-length), --quantize and --sliding-window: the same flags in every command. */
export function addContextOption(cmd: Command): Command {
  return addSlidingWindowOption(addQuantizeOption(cmd))
    .option('--context <tokens>', "KV cache size in tokens: prompt + output must fit (default and maximum: the model's max_position_embeddings)")
    .addOption(new Option('--context-length <tokens>', 'the old name of --context').hideHelp());
}

/** What generate and chat read from their flags: the model's and the sampling's. */
export type GenerationFlags = ModelFlags & SamplingFlags;

/** Adds the model flags, then every sampling flag; `withN` adds --n (generate only: a chat turn has one answer). */
export function addGenerationOptions(cmd: Command, opts: { withN: boolean }): Command {
  return addSamplingOptions(addModelOptions(cmd), opts);
}

/** Adds --model, --context, --system, --condition. */
function addModelOptions(cmd: Command): Command {
  cmd.option('--model <path>', MODEL_HELP);
  return addContextOption(cmd)
    .option('--lora <dir>', 'run under this LoRA adapter (a Hugging Face PEFT folder: adapter_config.json, adapter_model.safetensors)')
    .option('--system <text>', 'a system message before the conversation')
    .option('--condition <name>', "OpenChat's condition: 'GPT4 Correct' (default) or 'code' (coding mode)", conditionOption);
}

/** Adds every sampling flag, and --n with `withN`. */
function addSamplingOptions(cmd: Command, opts: { withN: boolean }): Command {
  for (const [flag, , , help] of NUMERIC_FLAGS) cmd.option(`${flag} <value>`, help);
  cmd.option(
    '--stop <text>',
    `stop before this text appears (repeatable, up to ${MAX_STOP_STRINGS})`,
    (value: string, previous: string[]) => [...previous, value],
    [] as string[],
  );
  if (opts.withN) cmd.option('--n <count>', 'independent samples, integer in [1, 4]; sample i uses seed + i');
  return cmd;
}

/**
 * A flag's text as validateSamplingParams should see it: a number when it reads
 * as one, otherwise the text itself, so that the error says `got "abc" (a string)`.
 */
function asNumber(text: string): number | string {
  const n = Number(text);
  return text.trim() !== '' && Number.isFinite(n) ? n : text;
}

/** Validated SamplingParams from the flags. Errors name the flag, the field and its range. */
export function samplingParamsFromFlags(flags: SamplingFlags): SamplingParams {
  const input: Record<string, unknown> = { stop: flags.stop };
  const flagOf: Record<string, string> = { stop: '--stop', n: '--n' };
  for (const [flag, key, field] of NUMERIC_FLAGS) {
    const value = flags[key];
    if (typeof value === 'string') input[field] = asNumber(value);
    flagOf[field] = flag;
  }
  if (flags.n !== undefined) input.n = asNumber(flags.n);
  try {
    return validateSamplingParams(input, CLI_SAMPLING_DEFAULTS);
  } catch (err) {
    if (err instanceof SamplingParamError) throw new Error(`invalid ${flagOf[err.field] ?? err.field}: ${err.message}`);
    throw err;
  }
}

/**
 * --context (or its old name --context-length) as a number, or undefined for the model's own
 * maximum. Both names are checked alike; giving both with different values is an error.
 */
export function contextFromFlags(flags: ContextFlags): number | undefined {
  const parse = (name: string, flag: string | undefined): number | undefined => {
    if (flag === undefined) return undefined;
    try {
      // 2 tokens at least: BOS plus one token to generate.
      return intOption(name, 2, 1 << 20)(flag);
    } catch (err) {
      // Commander's InvalidArgumentError is a CommanderError, which cli/main.ts exits on
      // without a message (Commander has printed it already when it parses options itself).
      throw new Error((err as Error).message);
    }
  };
  const context = parse('--context', flags.context);
  const old = parse('--context-length', flags.contextLength);
  if (context !== undefined && old !== undefined && context !== old) {
    throw new Error(`--context ${context} and --context-length ${old} disagree; give --context only (--context-length is its old name)`);
  }
  return context ?? old;
}

/**
 * Loads the model, with a progress line on stderr while a real checkpoint
 * loads (only on a terminal). `contextLength` defaults to the flags' --context,
 * `lora` (adapters by name) to the flags' --lora.
 */
export async function loadGenerator(
  flags: ModelFlags,
  contextLength = contextFromFlags(flags),
  lora = flags.lora === undefined ? [] : [{ name: cliAdapterName(flags.lora), dir: flags.lora }],
  batch: { maxBatch?: number; kvCacheGb?: number } = {},
): Promise<Generator> {
  const modelDir = resolveModelDir(flags.model);
  const progress = loadProgress(modelDir, process.stderr.isTTY === true && modelDir !== BUNDLED_MODEL_DIR);
  const generator = await Generator.load({ modelDir, contextLength, lora, quantize: flags.quantize, slidingWindow: flags.slidingWindow, onProgress: progress.onProgress, ...batch });
  progress.done();
  return generator;
}

/** The adapter --lora loads is named after its folder. */
function cliAdapterName(dir: string): string {
  return basename(resolve(dir)) || 'lora';
}

/** What each generation of a command runs under: the --lora adapter, or the base model. */
export function generateOptions(flags: ModelFlags): GenerateOptions {
  return flags.lora === undefined ? {} : { adapter: cliAdapterName(flags.lora) };
}

/**
 * The Generator of a one-user command (generate, chat): loadGenerator with `maxBatch` KV-cache
 * regions (generate's --n samples decode together; a chat has one), then the bundled model's notice.
 */
export async function loadCommandGenerator(flags: ModelFlags, maxBatch: number): Promise<Generator> {
  const generator = await loadGenerator(flags, undefined, undefined, { maxBatch });
  warnIfBundledModel(generator);
  return generator;
}

/** One line on stderr when the bundled model runs: its weights are random, so its text is noise. */
function warnIfBundledModel(generator: Generator): void {
  if (generator.isBundledModel) {
    process.stderr.write(
      'openchat: using the bundled tiny model, whose weights are random, so its text is noise ' +
        '(pass --model DIR or set OPENCHAT_MODEL for a real checkpoint)\n',
    );
  }
}

/** A generation's last event, as finishLine reads it. */
type Done = Pick<Extract<GenerationEvent, { type: 'done' }>, 'finishReason' | 'timings' | 'usage' | 'seed'>;

/**
 * The line on stderr after an answer: its numbers (formatTimings), then why it ended when it ended
 * by length, or `cancelledNote` when it was cancelled (chat says "(stopped)"; generate, nothing).
 * `params` are the flags' (max_tokens null without --max-tokens), so the note can tell the
 * user's limit from the default one.
 */
export function finishLine(done: Done, params: SamplingParams, contextLength: number, cancelledNote?: string): string {
  const note =
    done.finishReason === 'cancelled' && cancelledNote !== undefined
      ? cancelledNote
      : lengthNote(done.finishReason, done.timings, done.usage.completion_tokens, params, contextLength);
  return `${formatTimings(done.timings, done.finishReason, done.seed)}${note ? ' ' + note : ''}`;
}

/**
 * One line of numbers after an answer, e.g.
 *   [prompt 31 tokens (0 reused), first token 0.21 s, prefill 148 tok/s, decode 63 tokens at 41.7 tok/s, finish stop, seed 7]
 * Prefill speed counts only the prompt tokens that were actually run (not those reused from the KV cache).
 */
function formatTimings(t: Timings, finishReason: FinishReason, seed: number): string {
  return (
    `[prompt ${t.promptTokens} tokens (${t.reusedTokens} reused), ` +
    `first token ${t.timeToFirstToken.toFixed(2)} s, ` +
    `prefill ${t.prefillTokensPerSecond.toFixed(1)} tok/s, ` +
    `decode ${t.decodeTokens} tokens at ${t.decodeTokensPerSecond.toFixed(1)} tok/s, ` +
    `finish ${finishReason}, seed ${seed}]`
  );
}

/** Why a generation that ended by length ended, in words, or undefined. */
function lengthNote(finishReason: FinishReason, t: Timings, completionTokens: number, params: SamplingParams, contextLength: number): string | undefined {
  if (finishReason !== 'length') return undefined;
  if (params.max_tokens !== null && completionTokens >= params.max_tokens) return `(stopped at --max-tokens ${params.max_tokens})`;
  if (params.max_tokens === null && completionTokens >= DEFAULT_CLI_MAX_TOKENS) {
    return `(stopped at the default limit of ${DEFAULT_CLI_MAX_TOKENS} new tokens; --max-tokens changes it)`;
  }
  return `(stopped: prompt ${t.promptTokens} + output ${completionTokens} tokens filled the context of ${contextLength})`;
}
