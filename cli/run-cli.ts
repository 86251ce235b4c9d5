/**
 * Test helper: the real `openchat` CLI as a child process, on the bundled
 * model (OPENCHAT_MODEL removed from the environment), as a user runs it.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Starts `node cli/openchat.mjs ...args` with piped stdio. */
export function spawnCli(args: string[]): ChildProcessWithoutNullStreams {
  const env: NodeJS.ProcessEnv = { ...process.env, XDG_RUNTIME_DIR: '/tmp' };
  delete env.OPENCHAT_MODEL;
  return spawn(process.execPath, ['cli/openchat.mjs', ...args], { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Runs the CLI with `stdin` piped in and waits for it to exit on its own (60 s at most). */
export function runCli(args: string[], stdin = ''): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawnCli(args);
    const run: Run = { code: null, stdout: '', stderr: '' };
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      run.stdout += s;
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      run.stderr += s;
    });
    // A process that does not exit by itself fails the test instead of hanging it.
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`openchat ${args.join(' ')} did not exit within 60 s; stderr:\n${run.stderr}`));
    }, 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      run.code = code;
      resolve(run);
    });
    child.stdin.end(stdin);
  });
}

/** A running `openchat serve`: its URL once it listens, its stderr so far, and how it exited. */
export interface Served {
  child: ChildProcessWithoutNullStreams;
  url: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** Starts `openchat serve ...args` and resolves when it prints the URL it listens on (60 s at most). */
export async function startServe(args: string[]): Promise<Served> {
  const child = spawnCli(['serve', ...args]);
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start within 60 s:\n${stderr}`)), 60_000);
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s;
      const m = / on (http:\/\/\S+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.on('close', () => reject(new Error(`serve exited:\n${stderr}`)));
  });
  return { child, url, stderr: () => stderr, exited };
}
