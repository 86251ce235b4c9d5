/**
 * `openchat bench`'s flags, checked before the GPU starts (the harness itself runs in
 * bench/e2e.test.ts, in this process, where the compiled pipelines are shared).
 */
import { describe, expect, it } from 'vitest';
import { runCli } from './run-cli.ts';

describe('openchat bench flags', () => {
  it('refuses a --streams or --kv-cache-gb that is not one, naming the flag', async () => {
    const [streams, zero, kv] = await Promise.all([
      runCli(['bench', '--streams', '1,x']),
      runCli(['bench', '--streams', '0']),
      runCli(['bench', '--kv-cache-gb', '0']),
    ]);
    for (const run of [streams, zero]) {
      expect(run.code, run.stderr).not.toBe(0);
      expect(run.stderr).toMatch(/--streams must be a comma-separated list of positive integers, e\.g\. 1,8,32/);
      expect(run.stdout).toBe('');
    }
    expect(kv.code, kv.stderr).not.toBe(0);
    expect(kv.stderr).toMatch(/--kv-cache-gb must be a number in \(0, /);
  });

  it('lists --streams and --kv-cache-gb in its help', async () => {
    const run = await runCli(['bench', '--help']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/--streams <list>[\s\S]*default 1,8,32/);
    expect(run.stdout).toMatch(/--kv-cache-gb <gib>/);
  });
});
