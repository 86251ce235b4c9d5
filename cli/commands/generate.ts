/**
 * `openchat generate --prompt TEXT`: one prompt in, streamed text out.
 *
 * By default the prompt is one user message in OpenChat's chat format (what the
 * model was trained on); --raw sends BOS + the text as is. Text goes to stdout as
 * it is produced; everything else (the bundled-model notice, timing, why
 * generation stopped) goes to stderr, so `openchat generate ... > out.txt`
 * captures only the model's words.
 */
import type { Command } from 'commander';
import type { ChatMessage } from '../../src/tokenizer/index.ts';
import { Prompts, resolveModelDir, type PromptSpec } from '../../src/generator.ts';
import {
  addGenerationOptions,
  contextFromFlags,
  finishLine,
  generateOptions,
  loadCommandGenerator,
  samplingParamsFromFlags,
  withDefaultMaxTokens,
  type GenerationFlags,
} from './sampling-options.ts';

interface GenerateFlags extends GenerationFlags {
  prompt: string;
  raw?: boolean;
  verbose?: boolean;
}

export function registerGenerate(program: Command): void {
  const cmd = program
    .command('generate')
    .description('generate a reply to one prompt, streamed to stdout; timing on stderr')
    .requiredOption('--prompt <text>', 'the prompt (a user message, unless --raw)')
    .option('--raw', 'no chat template: BOS + the prompt text as is')
    .option('--verbose', "also print the prompt's token ids on stderr");
  addGenerationOptions(cmd, { withN: true });
  cmd.action(async (flags: GenerateFlags) => {
    // Everything that can be wrong with the flags fails here, before the GPU starts.
    const params = samplingParamsFromFlags(flags);
    if (flags.raw && (flags.system !== undefined || flags.condition !== undefined)) {
      throw new Error('--system and --condition apply to the chat template; they cannot be used with --raw');
    }
    // The prompt is built from the tokenizer and config.json alone, so one that cannot fit
    // (with --max-tokens) is refused before the weights load and before anything is printed.
    const prompts = await Prompts.load(resolveModelDir(flags.model), contextFromFlags(flags));
    let spec: PromptSpec;
    if (flags.raw) {
      spec = { kind: 'raw', text: flags.prompt };
    } else {
      const messages: ChatMessage[] = [];
      if (flags.system !== undefined) messages.push({ role: 'system', content: flags.system });
      messages.push({ role: 'user', content: flags.prompt });
      spec = { kind: 'chat', messages, condition: flags.condition };
    }
    const promptIds = prompts.fit(spec, params.max_tokens);
    if (flags.verbose) process.stderr.write(`prompt ids: ${JSON.stringify(promptIds)}\n`);
    const run = withDefaultMaxTokens(params, promptIds.length, prompts.contextLength);

    // One KV-cache region per sample: the n samples decode together, and no memory is kept for more.
    const generator = await loadCommandGenerator(flags, params.n);

    // Ctrl-C stops the answer being written (the remaining samples too) and still
    // reports what was done; a second Ctrl-C leaves at once.
    const abort = new AbortController();
    const onSigint = (): void => {
      if (abort.signal.aborted) process.exit(130);
      abort.abort();
    };
    process.on('SIGINT', onSigint);

    try {
      // Sample i runs with seed + i (Generator.generateChoices): different samples, each
      // reproducible on its own (`--seed S+i --n 1` prints sample i again).
      for await (const event of generator.generateChoices(promptIds, run, abort.signal, generateOptions(flags))) {
        if (event.type === 'start') {
          const i = event.index;
          if (params.n > 1) process.stdout.write(`${i > 0 ? '\n' : ''}--- sample ${i + 1} of ${params.n} (seed ${event.seed}) ---\n`);
        } else if (event.type === 'text') {
          process.stdout.write(event.text);
        } else {
          // Every sample's text ends with exactly one newline, so the shell prompt starts on its own line.
          process.stdout.write('\n');
          process.stderr.write(`${finishLine(event, params, generator.contextLength)}\n`);
        }
      }
    } finally {
      process.off('SIGINT', onSigint);
    }
    if (abort.signal.aborted) process.exitCode = 130;
  });
}
