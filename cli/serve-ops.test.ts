/**
 * `openchat serve` as a service runs it (a child process, signals from outside): API keys from a
 * file and from $OPENCHAT_API_KEYS (never on the command line), reloaded by HUP; TERM during
 * streamed answers drains (they all finish, new requests get 503, the exit is 0 within the drain
 * time); a second signal stops at once.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { API_KEYS_ENV } from '../src/server/keys.ts';
import { ChatStream, httpRequest, waitUntil } from '../src/server/ops.testing.ts';
import { parsePrometheus, valueOf } from '../src/server/prometheus.testing.ts';
import { runCli, startServe, type Served } from './run-cli.ts';

const root = mkdtempSync(join(tmpdir(), 'serve-ops-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Starts serve with $OPENCHAT_API_KEYS set to `env` (the child gets the environment it is spawned with). */
async function serveWithEnv(args: string[], env: string | undefined): Promise<Served> {
  const saved = process.env[API_KEYS_ENV];
  if (env === undefined) delete process.env[API_KEYS_ENV];
  else process.env[API_KEYS_ENV] = env;
  try {
    return await startServe(args);
  } finally {
    if (saved === undefined) delete process.env[API_KEYS_ENV];
    else process.env[API_KEYS_ENV] = saved;
  }
}

const chat = (content: string, maxTokens: number) => ({ model: 'openchat_3.5', messages: [{ role: 'user', content }], max_tokens: maxTokens, temperature: 0 });

describe('openchat serve: keys off the command line', () => {
  it('refuses a key file it cannot use, a bad --replica-name and --drain-timeout, in one line each, before loading the model', async () => {
    const empty = join(root, 'empty');
    writeFileSync(empty, '# no keys yet\n', { mode: 0o600 });
    const [missing, none, name, drain] = await Promise.all([
      runCli(['serve', '--port', '0', '--api-keys-file', join(root, 'absent')]),
      runCli(['serve', '--port', '0', '--api-keys-file', empty]),
      runCli(['serve', '--port', '0', '--replica-name', 'a b']),
      runCli(['serve', '--port', '0', '--drain-timeout', '-1']),
    ]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^openchat: cannot read the API key file \S+absent: ENOENT[^\n]*\n$/);
    expect(none.code).toBe(1);
    expect(none.stderr).toBe(`openchat: the API key file ${empty} holds no keys (one key per line; '#' starts a comment)\n`);
    expect(name.code).toBe(1);
    expect(name.stderr).toMatch(/--replica-name must be 1-64 letters, digits or \. _ : -; got "a b"/);
    expect(drain.code).toBe(1);
    expect(drain.stderr).toMatch(/--drain-timeout must be an integer in \[0, 3600\]; got "-1"/);
  });

  it('keys from a file and the environment; a wrong key is refused; HUP reloads the file; a bad reload keeps the keys; none in the process list', async () => {
    const file = join(root, 'keys');
    writeFileSync(file, '# the ops team\nfile-key-1\n', { mode: 0o600 });
    const served = await serveWithEnv(['--port', '0', '--api-keys-file', file, '--context', '256'], 'env-key-1, env-key-2');
    const { child, url, exited } = served;
    const status = async (key: string | null) =>
      (await httpRequest(`${url}/v1/models`, { headers: key === null ? {} : { Authorization: `Bearer ${key}` } })).status;
    try {
      expect(served.stderr()).toMatch(/, API keys required \(3\)/);
      expect(served.stderr()).not.toMatch(/process list|other users/);
      const cmdline = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8');
      expect(cmdline).toContain('--api-keys-file');
      for (const k of ['file-key-1', 'env-key-1']) expect(cmdline).not.toContain(k);

      expect([await status('file-key-1'), await status('env-key-1'), await status('env-key-2')]).toEqual([200, 200, 200]);
      expect([await status('file-key-2'), await status('file-key-'), await status(null)]).toEqual([401, 401, 401]);
      expect((await httpRequest(`${url}/metrics`)).status).toBe(401);

      writeFileSync(file, 'file-key-2\n');
      child.kill('SIGHUP');
      await waitUntil('the reload line', () => served.stderr().includes(`HUP: reloaded ${file}: 3 API keys`));
      expect([await status('file-key-2'), await status('file-key-1'), await status('env-key-1')]).toEqual([200, 401, 200]);

      writeFileSync(file, '# emptied by mistake\n');
      child.kill('SIGHUP');
      await waitUntil('the failed reload line', () => served.stderr().includes('holds no keys'));
      expect(served.stderr()).toContain(`openchat serve: HUP: the API key file ${file} holds no keys (one key per line; '#' starts a comment); keeping the 3 keys loaded before`);
      expect([await status('file-key-2'), await status(null)]).toEqual([200, 401]);

      const metrics = parsePrometheus((await httpRequest(`${url}/metrics`, { headers: { Authorization: 'Bearer env-key-2' } })).body);
      expect(valueOf(metrics, 'openchat:api_key_reloads_total', { result: 'ok' })).toBe(1);
      expect(valueOf(metrics, 'openchat:api_key_reloads_total', { result: 'error' })).toBe(1);
      expect(valueOf(metrics, 'openchat:api_keys')).toBe(3);
      // No key in the log either.
      expect(served.stderr()).not.toMatch(/file-key|env-key/);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });

  it('--api-keys still works, with a warning that the process list shows the keys', async () => {
    const served = await serveWithEnv(['--port', '0', '--api-keys', 'flag-key', '--context', '128'], undefined);
    try {
      expect(served.stderr()).toContain('--api-keys shows the keys to every user of this machine (in the process list); prefer --api-keys-file FILE or $OPENCHAT_API_KEYS');
      expect((await httpRequest(`${served.url}/v1/models`, { headers: { Authorization: 'Bearer flag-key' } })).status).toBe(200);
    } finally {
      served.child.kill('SIGTERM');
    }
    expect(await served.exited).toBe(0);
  });
});

describe('openchat serve: TERM drains', () => {
  it('TERM during 4 streamed answers: all 4 finish whole, a request sent after it gets 503, /health says draining, exit 0 within the drain time', async () => {
    const served = await startServe(['--port', '0', '--drain-timeout', '20', '--replica-name', 'drainer', '--context', '512']);
    const { child, url, exited } = served;
    let signalled = 0;
    try {
      const bodies = [0, 1, 2, 3].map((i) => chat(`answer ${i}`, 80));
      // Each answer as it comes alone (greedy: the same under load), to compare the drained ones with.
      const want = await Promise.all(bodies.map(async (b) => JSON.parse((await httpRequest(`${url}/v1/chat/completions`, { body: b })).body).choices[0].message.content as string));
      const streams = bodies.map((b) => new ChatStream(`${url}/v1/chat/completions`, b));
      await Promise.all(streams.map((s) => s.firstContent));
      child.kill('SIGTERM');
      signalled = performance.now();
      await waitUntil('the drain line', () => served.stderr().includes('TERM: draining'));
      expect(served.stderr()).toMatch(/waiting up to 20 s for the 4 requests in flight/);

      const late = await httpRequest(`${url}/v1/chat/completions`, { body: chat('too late', 4) });
      expect(late.status).toBe(503);
      expect(JSON.parse(late.body).error.code).toBe('server_shutting_down');
      expect(late.headers['retry-after']).toBe('1');
      const health = await httpRequest(`${url}/health`);
      expect([health.status, JSON.parse(health.body).status, health.headers['x-replica']]).toEqual([503, 'draining', 'drainer']);

      const results = await Promise.all(streams.map((s) => s.result));
      for (const [i, r] of results.entries()) {
        expect(r.done, `stream ${i}`).toBe(true);
        expect(r.text, `stream ${i}`).toBe(want[i]);
        expect(r.finishReason).toMatch(/^(stop|length)$/);
      }
      // They were still running when the signal came.
      for (const r of results) expect(r.endedAt).toBeGreaterThan(signalled);
    } finally {
      if (!signalled) child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(performance.now() - signalled).toBeLessThan(20_000);
    expect(served.stderr()).toContain('openchat serve: drained: every request finished');
  });

  it('a second TERM during the drain stops at once: the answer still running is cut, exit 0', async () => {
    const served = await startServe(['--port', '0', '--drain-timeout', '60', '--context', '1024']);
    const { child, url, exited } = served;
    const long = new ChatStream(`${url}/v1/chat/completions`, chat('a long one', 900));
    await long.firstContent;
    child.kill('SIGTERM');
    await waitUntil('the drain line', () => served.stderr().includes('TERM: draining'));
    const t0 = performance.now();
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(served.stderr()).toContain('openchat serve: stopping now: cancelling what is still running');
    const r = await long.result;
    expect(r.done).toBe(false);
  });
});
