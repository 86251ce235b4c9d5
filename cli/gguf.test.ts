/**
 * `--model FILE.gguf` on every command, as a user with a GGUF file runs them: the bundled folder
 * converted to an F16 GGUF (gguf.testing.ts, as llama.cpp's converter lays it out) gives the
 * folder's text and logits with --sliding-window 16; `quantize` writes a Q8_0 GGUF whose
 * weights are --quantize q8's; serve answers under the file's name.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, runCli, startServe, type Run } from './run-cli.ts';
import { ggufFromFolder } from '../src/model/gguf.testing.ts';
import { GgufFile } from '../src/util/gguf.ts';

const GOLDEN = join(ROOT, 'golden/tiny-mistral/');
const dir = mkdtempSync(join(tmpdir(), 'openchat-gguf-cli-'));
const file = join(dir, 'tiny-mistral.F16.gguf');
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(() => ggufFromFolder(GOLDEN, file, { type: 'F16' }));

async function cli(args: string[]): Promise<Run> {
  const r = await runCli(args);
  if (r.code !== 0) throw new Error(`openchat ${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
  return r;
}

describe('--model FILE.gguf', () => {
  it("generate and logits: the folder's greedy text and logits bit for bit (--sliding-window 16)", async () => {
    const gen = (model: string, extra: string[]) => cli(['generate', '--model', model, ...extra, '--prompt', 'Tell me about GGUF', '--temperature', '0', '--max-tokens', '12']);
    const [a, b] = await Promise.all([gen(GOLDEN, []), gen(file, ['--sliding-window', '16'])]);
    expect(b.stdout).toBe(a.stdout);
    const ids = '1,420,6316,349,264,1369,302,272,2696,28723,415,3445,9221,13,28705,4754,851,1500';
    await cli(['logits', '--model', GOLDEN, '--ids', ids, '--out', join(dir, 'a.f32'), '--top', '0']);
    await cli(['logits', '--model', file, '--sliding-window', '16', '--ids', ids, '--out', join(dir, 'b.f32'), '--top', '0']);
    expect(readFileSync(join(dir, 'b.f32')).equals(readFileSync(join(dir, 'a.f32')))).toBe(true);
  });

  it("quantize writes a Q8_0 GGUF that llama.cpp's layout reads, with --quantize q8's weights (the CPU reference's logits bit for bit)", async () => {
    const out = join(dir, 'tiny-mistral.Q8_0.gguf');
    const q = await cli(['quantize', '--model', file, '--out', out, '--format', 'q8']);
    expect(q.stderr).toMatch(/wrote .*Q8_0\.gguf: q8/);
    const f = await GgufFile.open(out);
    try {
      expect(f.tensor('blk.0.attn_q.weight').type).toBe('Q8_0');
      expect(f.tensor('blk.0.attn_norm.weight').type).toBe('F32');
      expect(f.getNumber('general.file_type')).toBe(7);
    } finally {
      f.close();
    }
    const ids = '1,420,6316,349,264,1369';
    await cli(['logits', '--cpu', '--model', GOLDEN, '--quantize', 'q8', '--ids', ids, '--out', join(dir, 'q.f32'), '--top', '0']);
    await cli(['logits', '--cpu', '--model', out, '--sliding-window', '16', '--ids', ids, '--out', join(dir, 'g.f32'), '--top', '0']);
    expect(readFileSync(join(dir, 'g.f32')).equals(readFileSync(join(dir, 'q.f32')))).toBe(true);
    const twice = await runCli(['quantize', '--model', out, '--out', join(dir, 'again.gguf'), '--format', 'q4']);
    expect(twice.code).not.toBe(0);
    expect(twice.stderr).toMatch(/is already Q8_0; quantize an F16, BF16 or F32 GGUF instead/);
  });

  it('serve answers under the file name without .gguf; a missing file or a folder/file mix-up is one line', async () => {
    const { child, url } = await startServe(['--port', '0', '--model', file, '--context', '64']);
    try {
      const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
      expect(models.data.map((m) => m.id)).toContain('tiny-mistral.F16');
      const body = JSON.stringify({ model: 'tiny-mistral.F16', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 });
      const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
      expect(res.status).toBe(200);
    } finally {
      child.kill('SIGTERM');
    }
    const missing = await runCli(['generate', '--model', join(dir, 'nope.gguf'), '--prompt', 'x']);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/GGUF file not found: .*nope\.gguf/);
    const mixed = await runCli(['quantize', '--model', file, '--out', join(dir, 'folder'), '--format', 'q8']);
    expect(mixed.stderr).toMatch(/--out must name a \.gguf file for a GGUF --model/);
  });
});
