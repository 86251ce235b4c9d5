/**
 * Two replicas of `openchat serve` behind the load balancers of deploy/ (nginx and HAProxy, as
 * Debian ships them), run from the files in the repo with only the addresses changed: every turn
 * of a conversation reaches the replica that answered its first (affinity on X-Session-Id, and on
 * HAProxy on the body's `user` too) and reuses its prefix from that replica's KV cache; then one
 * replica gets TERM mid-answer and nothing is lost: the answer finishes, the requests sent while
 * it drains and after it is gone are answered by the other replica, and it exits 0.
 * Each balancer's part is skipped, saying why, where it is not installed (.ci/setup installs
 * both as root). The systemd unit is checked by systemd-analyze where it exists.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatStream, httpRequest, waitUntil, type Answer } from '../src/server/ops.testing.ts';
import { parsePrometheus, valueOf } from '../src/server/prometheus.testing.ts';
import { ROOT, startServe, type Served } from './run-cli.ts';

/** A program on PATH or at one of `paths`, or null. */
function program(name: string, paths: string[]): string | null {
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).stdout.trim();
  return found || paths.find((p) => existsSync(p)) || null;
}

const NGINX = program('nginx', ['/usr/sbin/nginx']);
const HAPROXY = program('haproxy', ['/usr/sbin/haproxy']);
const SYSTEMD_ANALYZE = program('systemd-analyze', ['/usr/bin/systemd-analyze']);
for (const [name, found, pkg] of [['nginx', NGINX, 'nginx-light'], ['haproxy', HAPROXY, 'haproxy']] as const) {
  if (!found) console.warn(`replicas.test.ts: the ${name} part is skipped: ${name} is not installed (.ci/setup installs it as root: apt-get install -y ${pkg})`);
}
const root = mkdtempSync(join(tmpdir(), 'replicas-'));
// nginx's workers (user nobody when started as root) read below this folder.
chmodSync(root, 0o755);

/** A port free right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

interface Replica {
  name: string;
  port: number;
  served: Served;
}

const replicas: Replica[] = [];

async function startReplica(name: string, port: number): Promise<Served> {
  return startServe(['--port', String(port), '--replica-name', name, '--drain-timeout', '20', '--context', '512']);
}

const byName = (name: string) => replicas.find((r) => r.name === name)!;
const urlOf = (r: Replica) => `http://127.0.0.1:${r.port}`;

beforeAll(async () => {
  if (!NGINX && !HAPROXY) return;
  const served = await Promise.all(['r1', 'r2'].map((name) => startServe(['--port', '0', '--replica-name', name, '--drain-timeout', '20', '--context', '512'])));
  served.forEach((s, i) => replicas.push({ name: `r${i + 1}`, port: Number(new URL(s.url).port), served: s }));
}, 120_000);

afterAll(async () => {
  for (const r of replicas) {
    r.served.child.kill('SIGINT');
    await r.served.exited;
  }
  rmSync(root, { recursive: true, force: true });
});

/** A deploy/ file with the replicas' and the balancer's addresses swapped for the test's. */
function deployFile(path: string, listen: number): string {
  let text = readFileSync(join(ROOT, path), 'utf8');
  for (const [from, to] of [
    ['127.0.0.1:18881', `127.0.0.1:${replicas[0]!.port}`],
    ['127.0.0.1:18882', `127.0.0.1:${replicas[1]!.port}`],
    ['127.0.0.1:18888', `127.0.0.1:${listen}`],
  ] as const) {
    if (!text.includes(from)) throw new Error(`${path} no longer has ${from}: update this test with it`);
    text = text.replaceAll(from, to);
  }
  return text;
}

interface Balancer {
  url: string;
  child: ChildProcess;
  /** What it printed, and its error log: for a failure's message. */
  output: () => string;
}

async function startBalancer(command: string, args: string[], url: string, errorLog?: string): Promise<Balancer> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (output += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (output += s));
  let exited = false;
  child.on('exit', () => (exited = true));
  await waitUntil(
    `${command} to answer /health on ${url}`,
    async () => {
      if (exited) throw new Error(`${command} exited:\n${output}`);
      try {
        return (await httpRequest(`${url}/health`)).status === 200;
      } catch {
        return false;
      }
    },
    20_000,
  );
  return { url, child, output: () => output + (errorLog && existsSync(errorLog) ? readFileSync(errorLog, 'utf8') : '') };
}

async function startNginx(): Promise<Balancer> {
  const port = await freePort();
  const dir = mkdtempSync(join(root, 'nginx-'));
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, 'openchat.conf'), deployFile('deploy/nginx/openchat.conf', port));
  // The main file Debian's nginx.conf would be, cut to what a private instance needs.
  writeFileSync(
    join(dir, 'nginx.conf'),
    [
      'daemon off;',
      'worker_processes 1;',
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log notice;`,
      'events { worker_connections 256; }',
      'http {',
      `  access_log ${dir}/access.log;`,
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/${t};`),
      `  include ${dir}/openchat.conf;`,
      '}',
      '',
    ].join('\n'),
  );
  return startBalancer(NGINX!, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], `http://127.0.0.1:${port}`, join(dir, 'error.log'));
}

async function startHaproxy(): Promise<Balancer> {
  const port = await freePort();
  const file = join(root, `haproxy-${port}.cfg`);
  writeFileSync(file, deployFile('deploy/haproxy/haproxy.cfg', port));
  return startBalancer(HAPROXY!, ['-db', '-f', file], `http://127.0.0.1:${port}`);
}

async function stopBalancer(b: Balancer): Promise<void> {
  if (b.child.exitCode !== null) return;
  const exited = new Promise((r) => b.child.once('exit', r));
  b.child.kill('SIGTERM');
  await exited;
}

/** The replica's prefix-cache counters, read from it directly. */
async function prefixCounters(r: Replica): Promise<{ hits: number; prompt: number }> {
  const families = parsePrometheus((await httpRequest(`${urlOf(r)}/metrics`)).body);
  return { hits: valueOf(families, 'vllm:prefix_cache_hits_total'), prompt: valueOf(families, 'vllm:prompt_tokens_total') };
}

type Message = { role: string; content: string };

interface Conversation {
  label: string;
  /** How it names itself to the balancer. */
  key: { header: string } | { user: string };
  history: Message[];
  replica: string | null;
  /** The prompt tokens of its last turn. */
  lastPromptTokens?: number;
}

/** The next turn's body and headers. */
function request(c: Conversation, content: string, maxTokens: number): { body: Record<string, unknown>; headers: Record<string, string> } {
  const body: Record<string, unknown> = {
    model: 'openchat_3.5',
    messages: [...c.history, { role: 'user', content }],
    max_tokens: maxTokens,
    temperature: 0,
    ...('user' in c.key ? { user: c.key.user } : {}),
  };
  return { body, headers: 'header' in c.key ? { 'X-Session-Id': c.key.header } : {} };
}

/** One turn through the balancer: the answer, and how many prompt tokens its replica had cached. */
async function turn(b: Balancer, c: Conversation, content: string): Promise<{ res: Answer; replica: string; cached: number; promptTokens: number }> {
  const { body, headers } = request(c, content, 6);
  const guess = c.replica ? byName(c.replica) : null;
  const before = guess ? await prefixCounters(guess) : null;
  const res = await httpRequest(`${b.url}/v1/chat/completions`, { body, headers });
  expect(res.status, `${c.label}: ${res.body}`).toBe(200);
  const replica = res.headers['x-replica']!;
  const json = JSON.parse(res.body) as { usage: { prompt_tokens: number }; choices: Array<{ message: { content: string } }> };
  c.history.push({ role: 'user', content }, { role: 'assistant', content: json.choices[0]!.message.content });
  let cached = 0;
  if (guess && before && replica === guess.name) {
    const after = await prefixCounters(guess);
    expect(after.prompt - before.prompt).toBe(json.usage.prompt_tokens);
    cached = after.hits - before.hits;
  }
  return { res, replica, cached, promptTokens: json.usage.prompt_tokens };
}

/** Session keys that the balancer sends to r1 and to r2 (found by asking it). */
async function keysPerReplica(b: Balancer, make: (i: number) => Conversation['key']): Promise<Map<string, Conversation['key']>> {
  const found = new Map<string, Conversation['key']>();
  for (let i = 0; i < 64 && found.size < 2; i++) {
    const key = make(i);
    const res =
      'header' in key
        ? await httpRequest(`${b.url}/v1/models`, { headers: { 'X-Session-Id': key.header } })
        : await httpRequest(`${b.url}/v1/chat/completions`, { body: { model: 'openchat_3.5', messages: [{ role: 'user', content: 'probe' }], max_tokens: 1, user: key.user } });
    expect(res.status, res.body).toBe(200);
    const r = res.headers['x-replica']!;
    if (!found.has(r)) found.set(r, key);
  }
  if (found.size < 2) throw new Error(`the balancer sent 64 different session keys all to ${[...found.keys()].join(', ')}`);
  return found;
}

/**
 * The whole scenario through `b`: 2 conversations x 3 turns (plus, with `byUser`, one keyed by
 * the body's `user`), then TERM to the replica holding the first, mid-answer. `passiveChecks`:
 * the balancer learns of the drain only from the replica's 503s (nginx), so the first request
 * sent during the drain surely met one and was retried.
 */
async function scenario(b: Balancer, byUser: boolean, passiveChecks: boolean): Promise<void> {
  const conversations: Conversation[] = [];
  for (const [replica, key] of await keysPerReplica(b, (i) => ({ header: `conversation-${i}` }))) {
    conversations.push({ label: `X-Session-Id ${'header' in key ? key.header : ''} (${replica})`, key, history: [], replica: null });
  }
  // One conversation per replica at a time keeps the reuse figures exact (operations.test.ts
  // checks that conversations taking turns on one server keep their prefixes).
  const rounds = [conversations.slice()];
  if (byUser) {
    const [, key] = [...(await keysPerReplica(b, (i) => ({ user: `user-${i}` })))][0]!;
    const c: Conversation = { label: `user ${'user' in key ? key.user : ''}`, key, history: [], replica: null };
    conversations.push(c);
    rounds.push([c]);
  }
  for (const round of rounds) {
    for (let t = 1; t <= 3; t++) {
      for (const c of round) {
        const previous = c.lastPromptTokens ?? 0;
        const r = await turn(b, c, `turn ${t} of ${c.label}`);
        c.lastPromptTokens = r.promptTokens;
        if (c.replica === null) {
          c.replica = r.replica;
          continue;
        }
        expect(r.replica, `${c.label} turn ${t}`).toBe(c.replica);
        // Its earlier turns came from that replica's KV cache: fewer prompt tokens computed than sent,
        // by (at least all but one of) the previous turn's whole prompt.
        expect(r.cached, `${c.label} turn ${t} reused`).toBeGreaterThanOrEqual(previous - 1);
        expect(r.promptTokens - r.cached).toBeLessThan(r.promptTokens);
      }
    }
  }

  // TERM to the replica of the first conversation while it streams that conversation's next answer.
  const [a, other] = [conversations[0]!, conversations[1]!];
  const victim = byName(a.replica!);
  const survivor = replicas.find((r) => r !== victim)!;
  const { body, headers } = request(a, 'a long answer, please', 150);
  const stream = new ChatStream(`${b.url}/v1/chat/completions`, body, headers);
  await stream.firstContent;
  victim.served.child.kill('SIGTERM');
  await waitUntil('the replica to drain', () => victim.served.stderr().includes('TERM: draining'));

  // While it drains and after it has gone, the balancer sends everyone to the other replica.
  const during = await Promise.all([
    httpRequest(`${b.url}/v1/chat/completions`, request(a, 'meanwhile', 4)),
    httpRequest(`${b.url}/v1/chat/completions`, request(other, 'meanwhile', 4)),
    httpRequest(`${b.url}/v1/models`, { headers }),
  ]);
  for (const res of during) {
    expect(res.status, res.body).toBe(200);
    expect(res.headers['x-replica']).toBe(survivor.name);
  }
  if (passiveChecks) await waitUntil('a 503 from the draining replica (retried by the balancer)', () => / POST \/v1\/chat\/completions 503 error=server_shutting_down/.test(victim.served.stderr()), 5_000);
  const result = await stream.result;
  expect(result.status).toBe(200);
  expect(result.headers.get('x-replica')).toBe(victim.name);
  expect(result.done, 'the answer being streamed when TERM came finished').toBe(true);
  expect(result.finishReason).toMatch(/^(stop|length)$/);
  if (result.finishReason === 'length') expect(result.usage?.completion_tokens).toBe(150);
  expect(await victim.served.exited).toBe(0);
  expect(victim.served.stderr()).toContain('openchat serve: drained: every request finished');

  for (const c of [a, other]) {
    const res = await httpRequest(`${b.url}/v1/chat/completions`, request(c, 'after', 4));
    expect(res.status, res.body).toBe(200);
    expect(res.headers['x-replica']).toBe(survivor.name);
  }
  // Back for whatever runs next.
  victim.served = await startReplica(victim.name, victim.port);
}

describe.skipIf(!NGINX)(NGINX ? 'replicas behind nginx (deploy/nginx/openchat.conf)' : 'replicas behind nginx: skipped, nginx is not installed (.ci/setup installs it as root: apt-get install nginx-light)', () => {
  it('2 conversations x 3 turns stay on their replicas and reuse their prefixes; TERM to one mid-answer loses nothing', async () => {
    const b = await startNginx();
    try {
      await scenario(b, false, true);
    } catch (err) {
      throw new Error(`${(err as Error).message}\nnginx:\n${b.output().slice(-3000)}`, { cause: err });
    } finally {
      await stopBalancer(b);
    }
  });
});

describe.skipIf(!HAPROXY)(HAPROXY ? 'replicas behind HAProxy (deploy/haproxy/haproxy.cfg)' : 'replicas behind HAProxy: skipped, haproxy is not installed (.ci/setup installs it as root: apt-get install haproxy)', () => {
  it('conversations keyed by X-Session-Id or by the body’s user stay on their replicas and reuse their prefixes; TERM to one mid-answer loses nothing', async () => {
    const b = await startHaproxy();
    try {
      await scenario(b, true, false);
    } catch (err) {
      throw new Error(`${(err as Error).message}\nhaproxy:\n${b.output().slice(-3000)}`, { cause: err });
    } finally {
      await stopBalancer(b);
    }
  });
});

describe.skipIf(!SYSTEMD_ANALYZE)(SYSTEMD_ANALYZE ? 'the systemd unit' : 'the systemd unit: skipped, no systemd-analyze', () => {
  it('deploy/systemd/openchat@.service passes systemd-analyze verify', () => {
    const dir = mkdtempSync(join(root, 'systemd-'));
    // The unit names /usr/bin/node; verify checks that the program exists, so point it at this one.
    const unit = readFileSync(join(ROOT, 'deploy/systemd/openchat@.service'), 'utf8').replace('ExecStart=/usr/bin/node ', `ExecStart=${process.execPath} `);
    writeFileSync(join(dir, 'openchat@.service'), unit);
    const run = spawnSync(SYSTEMD_ANALYZE!, ['verify', join(dir, 'openchat@18881.service')], { encoding: 'utf8' });
    expect(run.stderr + run.stdout).toBe('');
    expect(run.status).toBe(0);
  });
});
