/**
 * Ctrl-C, as a user presses it: SIGINT to the real CLI process while it is
 * writing an answer. `generate` stops, still reports its numbers, and exits
 * with 130; `chat` stops only the current answer and goes on with the next turn.
 */
import { describe, expect, it } from 'vitest';
import { spawnCli } from './run-cli.ts';

interface Session {
  stdout: string;
  stderr: string;
  code: Promise<number | null>;
  write(text: string): void;
  end(): void;
  /** Resolves once stdout holds at least `n` characters. */
  outputAtLeast(n: number): Promise<void>;
  /** Resolves once stderr contains `text`. */
  stderrIncludes(text: string): Promise<void>;
  interrupt(): void;
}

function start(args: string[]): Session {
  const child = spawnCli(args);
  const s: Session = {
    stdout: '',
    stderr: '',
    code: new Promise((resolve) => child.on('exit', (code) => resolve(code))),
    write: (text) => child.stdin.write(text),
    end: () => child.stdin.end(),
    outputAtLeast: (n) =>
      new Promise((resolve) => {
        const check = () => {
          if (s.stdout.length >= n) {
            child.stdout.off('data', check);
            resolve();
          }
        };
        child.stdout.on('data', check);
        check();
      }),
    stderrIncludes: (text) =>
      new Promise((resolve) => {
        const check = () => {
          if (s.stderr.includes(text)) {
            child.stderr.off('data', check);
            resolve();
          }
        };
        child.stderr.on('data', check);
        check();
      }),
    interrupt: () => child.kill('SIGINT'),
  };
  child.stdout.on('data', (d: Buffer) => (s.stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (s.stderr += d.toString()));
  return s;
}

describe('Ctrl-C', () => {
  it('generate: stops the answer, prints the stats line, exits 130', async () => {
    // 900 tokens take several seconds on the bundled model; we interrupt after the first words.
    const s = start(['generate', '--prompt', 'Tell me a long story.', '--max-tokens', '900', '--seed', '5']);
    s.end();
    await s.outputAtLeast(10);
    s.interrupt();
    expect(await s.code).toBe(130);
    const stats = s.stderr.split('\n').find((l) => l.startsWith('[prompt'));
    expect(stats, s.stderr).toBeDefined();
    const decoded = Number(/decode (\d+) tokens/.exec(stats!)?.[1]);
    expect(decoded).toBeLessThan(899); // stopped well before --max-tokens
  });

  it('chat: stops only the current answer; the session answers the next turn', async () => {
    const s = start(['chat', '--max-tokens', '600', '--seed', '5']);
    s.write('Tell me a long story.\n');
    await s.outputAtLeast(10);
    s.interrupt();
    await s.stderrIncludes('(stopped)');
    s.write('And then?\n');
    s.end();
    expect(await s.code, s.stderr).toBe(0);
    // One stats line per turn: the stopped one, then the second answer, which ran to --max-tokens
    // (or to an end-of-turn token) and saw the first turn in its prompt.
    const stats = s.stderr.split('\n').filter((l) => l.startsWith('[prompt'));
    expect(stats, s.stderr).toHaveLength(2);
    const firstDecoded = Number(/decode (\d+) tokens/.exec(stats[0]!)?.[1]);
    expect(firstDecoded).toBeLessThan(599);
    expect(stats[1]).toMatch(/finish (length|stop)/);
  });
});
