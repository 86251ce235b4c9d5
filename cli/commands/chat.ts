/**
 * `openchat chat`: a multi-turn conversation in the terminal.
 *
 * The conversation is kept as a list of messages and re-encoded in full for every
 * turn, which is simple and always exactly OpenChat's format. That costs nothing
 * on the GPU: each turn's prompt extends the previous one, so the Generator finds
 * the earlier turns still in its KV cache and only runs the new tokens (the
 * stats line shows them as "reused").
 *
 * Keys: Ctrl-C stops the answer being written and keeps the session; at the
 * prompt, Ctrl-C twice in a row (or Ctrl-D, or /exit) leaves. /reset starts over.
 *
 * With stdin not a terminal (a pipe, a file), every line is a user turn and each
 * answer is printed followed by a newline; no prompts are shown. That is how the
 * tests drive it: `printf 'hi\nmore\n' | openchat chat`.
 */
import { createInterface, type Interface } from 'node:readline';
import type { Command } from 'commander';
import { ContextLengthError, type Generator } from '../../src/generator.ts';
import { sampleSeed, type SamplingParams } from '../../src/sampling/params.ts';
import type { ChatMessage } from '../../src/tokenizer/index.ts';
import {
  addGenerationOptions,
  finishLine,
  generateOptions,
  loadCommandGenerator,
  samplingParamsFromFlags,
  withDefaultMaxTokens,
  type GenerationFlags,
} from './sampling-options.ts';

const HELP = '/reset starts a new conversation, /exit (or Ctrl-D) leaves; Ctrl-C stops an answer';

export function registerChat(program: Command): void {
  const cmd = program
    .command('chat')
    .description('an interactive multi-turn chat (reads user turns line by line from stdin when it is not a terminal)');
  addGenerationOptions(cmd, { withN: false });
  cmd.action(async (flags: GenerationFlags) => {
    const params = samplingParamsFromFlags(flags);
    // One conversation: one KV-cache region, kept between turns.
    const generator = await loadCommandGenerator(flags, 1);
    await new ChatSession(generator, params, flags).run();
  });
}

class ChatSession {
  /** The user and assistant turns so far (the system message is added when encoding). */
  private messages: ChatMessage[] = [];
  /** Turns answered since the start: with --seed S, turn t samples with seed S + t (reproducible, not repetitive). */
  private turns = 0;
  /** The answer being generated, if any: Ctrl-C aborts it. */
  private answering: AbortController | null = null;
  /** Whether the last key at the prompt was Ctrl-C (a second one leaves). */
  private interruptedAtPrompt = false;
  private readonly interactive = process.stdin.isTTY === true && process.stdout.isTTY === true;
  private readonly rl: Interface;

  constructor(
    private readonly generator: Generator,
    private readonly params: SamplingParams,
    private readonly flags: GenerationFlags,
  ) {
    this.rl = createInterface({
      input: process.stdin,
      output: this.interactive ? process.stdout : undefined,
      terminal: this.interactive,
      prompt: 'you> ',
    });
  }

  async run(): Promise<void> {
    // On a terminal readline reads Ctrl-C as a key and emits 'SIGINT' on the interface;
    // otherwise (piped stdin) a Ctrl-C reaches the process as a real signal.
    const onInterrupt = (): void => this.interrupt();
    this.rl.on('SIGINT', onInterrupt);
    process.on('SIGINT', onInterrupt);
    try {
      if (this.interactive) {
        process.stderr.write(`chat with ${this.generator.modelName} (context ${this.generator.contextLength} tokens): ${HELP}\n`);
        this.rl.prompt();
      }
      // The iterator queues lines that arrive while an answer is being written.
      for await (const raw of this.rl) {
        this.interruptedAtPrompt = false;
        const line = raw.trim();
        if (line === '/exit' || line === '/quit') break;
        if (line === '/reset') {
          this.messages = [];
          this.note('(new conversation)');
        } else if (line === '/help') {
          this.note(HELP);
        } else if (/^\/\w+$/.test(line)) {
          this.note(`unknown command ${line}; ${HELP}`);
        } else if (line !== '') {
          await this.answer(line);
        }
        if (this.interactive) this.rl.prompt();
      }
    } finally {
      this.rl.off('SIGINT', onInterrupt);
      process.off('SIGINT', onInterrupt);
      this.rl.close();
      if (this.interactive) process.stdout.write('\n');
    }
  }

  /** Ctrl-C: stop the answer being written; at the prompt, clear the line, and leave on the second. */
  private interrupt(): void {
    if (this.answering) {
      this.answering.abort();
    } else if (this.interruptedAtPrompt || !this.interactive) {
      this.rl.close(); // ends the line iterator, and with it the session
    } else {
      this.interruptedAtPrompt = true;
      // Ctrl-E, Ctrl-U: drop what was typed, like a shell does.
      this.rl.write(null, { ctrl: true, name: 'e' });
      this.rl.write(null, { ctrl: true, name: 'u' });
      process.stdout.write('\n');
      this.note('(Ctrl-C again, Ctrl-D or /exit to leave)');
      this.rl.prompt();
    }
  }

  private async answer(userText: string): Promise<void> {
    this.messages.push({ role: 'user', content: userText });
    const conversation: ChatMessage[] =
      this.flags.system !== undefined ? [{ role: 'system', content: this.flags.system }, ...this.messages] : this.messages;
    let promptIds: number[];
    try {
      // A turn whose length alone shows it cannot fit is refused without tokenizing it.
      promptIds = this.generator.prompts.fit({ kind: 'chat', messages: conversation, condition: this.flags.condition }, this.params.max_tokens);
    } catch (err) {
      if (!(err instanceof ContextLengthError)) throw err;
      // The session goes on: the user can /reset, or (with --max-tokens) ask for less.
      this.messages.pop();
      process.stderr.write(`openchat: ${err.message} (/reset starts a new conversation)\n`);
      if (!this.interactive) process.exitCode = 1;
      return;
    }

    const seed = this.params.seed === null ? null : sampleSeed(this.params.seed, this.turns);
    const params = withDefaultMaxTokens({ ...this.params, seed }, promptIds.length, this.generator.contextLength);
    this.turns++;
    this.answering = new AbortController();
    let text = '';
    let cancelled = false;
    try {
      for await (const event of this.generator.generate(promptIds, params, this.answering.signal, generateOptions(this.flags))) {
        if (event.type === 'text') {
          text += event.text;
          process.stdout.write(event.text);
        } else {
          process.stdout.write('\n');
          cancelled = event.finishReason === 'cancelled';
          this.note(finishLine(event, this.params, this.generator.contextLength, '(stopped)'));
        }
      }
    } finally {
      this.answering = null;
    }
    // A stopped answer stays in the conversation as far as it got (that is what the user saw);
    // one stopped before its first word is dropped with its question.
    if (cancelled && text === '') this.messages.pop();
    else this.messages.push({ role: 'assistant', content: text });
  }

  /** Session messages go to stderr (dimmed on a terminal), so stdout holds only the answers. */
  private note(text: string): void {
    process.stderr.write(process.stderr.isTTY ? `\x1b[2m${text}\x1b[0m\n` : `${text}\n`);
  }
}
