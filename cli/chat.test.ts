/**
 * `openchat chat` driven through piped stdin (each line a user turn), as a real
 * child process on the bundled tiny random-weight model.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { BUNDLED_MODEL_DIR } from '../src/generator.ts';
import { OpenChatTokenizer } from '../src/tokenizer/index.ts';
import { freshSeed } from '../src/util/testing.ts';
import { runCli, type Run } from './run-cli.ts';


const openchat = runCli;

const TIMING = /^\[prompt (\d+) tokens \((\d+) reused\), .*, finish (\w+), seed (\d+)\]/;

/** The stats line after each answer: prompt tokens, tokens reused from the KV cache, seed. */
function turns(stderr: string): Array<{ promptTokens: number; reused: number; finish: string; seed: number }> {
  return stderr
    .split('\n')
    .map((line) => TIMING.exec(line))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ promptTokens: +m[1]!, reused: +m[2]!, finish: m[3]!, seed: +m[4]! }));
}

describe('openchat chat (piped stdin)', () => {
  const seed = freshSeed();
  let tokenizer: OpenChatTokenizer;
  let conversation: Run;
  let limits: Run;
  let huge: Run;

  beforeAll(async () => {
    tokenizer = await OpenChatTokenizer.load(BUNDLED_MODEL_DIR);
    [conversation, limits, huge] = await Promise.all([
      // One token per answer: the tiny model's sliding window is 16 tokens, so its rolling KV cache
      // can only be rewound to the start of the answer when fewer than that were generated since.
      openchat(
        ['chat', '--seed', String(seed), '--temperature', '1', '--max-tokens', '1'],
        'Hello, who are you?\nTell me more.\n/reset\nA new start.\n',
      ),
      // A turn too long for the context fails on its own; the session goes on until /exit.
      openchat(
        ['chat', '--context', '64', '--max-tokens', '4', '--seed', String(seed)],
        `${'the sea '.repeat(40)}\nShort one.\n/exit\nNever read.\n`,
      ),
      // 131,072 x "中": once a stack overflow that ended the session; now a refused turn.
      openchat(['chat', '--max-tokens', '2', '--seed', String(seed)], `${'中'.repeat(131072)}\nShort one.\n`),
    ]);
  });

  it('answers every turn and exits 0 by itself at the end of input', () => {
    expect(conversation.code, conversation.stderr).toBe(0);
    expect(conversation.stderr).toMatch(/^openchat: using the bundled tiny model, whose weights are random/m);
    const t = turns(conversation.stderr);
    expect(t, conversation.stderr).toHaveLength(3);
    // Turn i samples with seed + i.
    expect(t.map((x) => x.seed)).toEqual([seed, seed + 1, seed + 2]);
    // Each answer ends with one newline on stdout.
    expect(conversation.stdout.split('\n').length - 1).toBeGreaterThanOrEqual(3);
  });

  it('keeps the conversation and its KV cache between turns, and /reset starts over', () => {
    const [first, second, afterReset] = turns(conversation.stderr);
    expect(first!.promptTokens).toBe(tokenizer.encodeChat([{ role: 'user', content: 'Hello, who are you?' }]).length);
    // The second prompt holds the first turn, the answer, and the new question...
    const asked = tokenizer.encode('Tell me more.').length;
    expect(second!.promptTokens).toBeGreaterThan(first!.promptTokens + asked);
    // ...and the first prompt's keys and values were still in the cache.
    expect(second!.reused).toBeGreaterThanOrEqual(first!.promptTokens);
    expect(afterReset!.promptTokens).toBe(tokenizer.encodeChat([{ role: 'user', content: 'A new start.' }]).length);
  });

  it('ends an answer at 256 new tokens without --max-tokens, saying so', async () => {
    const run = await openchat(['chat', '--seed', String(seed), '--temperature', '1'], 'Write a long story.\n');
    expect(run.code, run.stderr).toBe(0);
    const line = run.stderr.split('\n').find((l) => TIMING.test(l));
    expect(line, run.stderr).toBeDefined();
    const [, decode, finish] = /decode (\d+) tokens .*finish (\w+)/.exec(line!)!;
    // An end-of-turn token could end it earlier (random weights: rarely).
    if (finish === 'length') {
      expect(Number(decode) + 1).toBe(256);
      expect(line).toMatch(/\(stopped at the default limit of 256 new tokens; --max-tokens changes it\)$/);
    } else {
      expect(finish).toBe('stop');
    }
  });

  it('reports a turn that does not fit the context in one line, goes on, and leaves at /exit', () => {
    const errors = limits.stderr.split('\n').filter((l) => l.startsWith('openchat: the prompt'));
    expect(errors, limits.stderr).toHaveLength(1);
    expect(errors[0]).toMatch(/the prompt \(\d+ tokens\) plus max_tokens \(4\) is \d+ tokens, more than the context length 64/);
    // Only "Short one." was answered: the line after /exit was never read.
    const t = turns(limits.stderr);
    expect(t, limits.stderr).toHaveLength(1);
    expect(t[0]!.promptTokens).toBe(tokenizer.encodeChat([{ role: 'user', content: 'Short one.' }]).length);
    // A failed turn makes the piped session's exit code 1, for scripts.
    expect(limits.code).toBe(1);
  });

  it('refuses a 131,072-character turn from its length alone, and goes on', () => {
    const errors = huge.stderr.split('\n').filter((l) => l.startsWith('openchat: '));
    expect(errors.filter((l) => !l.startsWith('openchat: using the bundled')), huge.stderr).toEqual([
      expect.stringMatching(/^openchat: the prompt \(at least \d+ tokens\) plus max_tokens \(2\) is at least \d+ tokens, more than the context length 1024/),
    ]);
    expect(huge.stderr).not.toMatch(/Maximum call stack/);
    const t = turns(huge.stderr);
    expect(t, huge.stderr).toHaveLength(1);
    expect(t[0]!.promptTokens).toBe(tokenizer.encodeChat([{ role: 'user', content: 'Short one.' }]).length);
    expect(huge.code).toBe(1);
  });
});
