/**
 * `openchat serve` as a child process: its start-up checks and a log file that cannot be written.
 */
import { describe, expect, it } from 'vitest';
import { runCli, startServe } from './run-cli.ts';

describe('openchat serve', () => {
  it('refuses a --log-file that cannot be opened with one line, before loading the model', async () => {
    const run = await runCli(['serve', '--port', '0', '--log-file', '/nonexistent/dir/x.log']);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe('openchat: cannot open the log file /nonexistent/dir/x.log: ENOENT: no such file or directory, open \'/nonexistent/dir/x.log\'\n');
  });

  it('keeps serving when the log cannot be written (/dev/full): reported once, lines go to stderr; --context-length still works', async () => {
    const served = await startServe(['--port', '0', '--log-file', '/dev/full', '--context-length', '64']);
    const { child, url, exited } = served;
    try {
      // The hidden old flag sets the context like --context.
      expect(served.stderr()).toMatch(/\(context 64 tokens\)/);
      const body = JSON.stringify({ model: 'openchat_3.5', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
      for (let i = 0; i < 3; i++) {
        const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
        expect(res.status).toBe(200);
        expect((await fetch(`${url}/health`)).status).toBe(200);
      }
      const reports = served.stderr().split('\n').filter((l) => l.includes('cannot write the log file /dev/full'));
      expect(reports, served.stderr()).toHaveLength(1);
      expect(reports[0]).toMatch(/ENOSPC/);
      // The request lines went on to stderr.
      expect(served.stderr()).toMatch(/ POST \/v1\/chat\/completions 200 prompt_tokens=\d+/);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });

  it('rejects bad --context and --context-length values alike, the two disagreeing, and a bad --request-timeout', async () => {
    const [context, old, both, timeout] = await Promise.all([
      runCli(['serve', '--port', '0', '--context', '1']),
      runCli(['serve', '--port', '0', '--context-length', 'many']),
      runCli(['serve', '--port', '0', '--context', '64', '--context-length', '32']),
      runCli(['serve', '--port', '0', '--request-timeout', '0']),
    ]);
    expect(timeout.code).toBe(1);
    expect(timeout.stderr).toMatch(/^openchat: .*--request-timeout must be an integer in \[1, 3600\]; got "0"\n$/);
    expect(context.code).toBe(1);
    expect(context.stderr).toMatch(/^openchat: --context must be an integer in \[2, \d+\]; got "1"\n$/);
    expect(old.code).toBe(1);
    expect(old.stderr).toMatch(/^openchat: --context-length must be an integer in \[2, \d+\]; got "many"\n$/);
    expect(both.code).toBe(1);
    expect(both.stderr).toMatch(/^openchat: --context 64 and --context-length 32 disagree/);
  });
});
