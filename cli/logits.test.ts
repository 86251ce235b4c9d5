/**
 * `openchat logits` end to end, as a researcher runs it: the real CLI as a
 * child process on the bundled golden checkpoint; the logits file it writes
 * must match Hugging Face's golden logits, and --greedy must continue as HF did.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, runCli, type Run } from './run-cli.ts';

const GOLDEN = join(ROOT, 'golden/tiny-mistral/');
const manifest = JSON.parse(readFileSync(join(GOLDEN, 'golden.json'), 'utf8')) as {
  cases: { id: string; input_ids: number[]; logits: { file: string }; greedy_recompute: { new_tokens: number[]; top1_margin_per_step: number[] } }[];
};
const dir = mkdtempSync(join(tmpdir(), 'openchat-logits-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Resolves with the output of a successful run; rejects (with stderr) on a non-zero exit. */
async function cli(args: string[]): Promise<Run> {
  const r = await runCli(args);
  if (r.code !== 0) throw Object.assign(new Error(`exit ${r.code}`), r);
  return r;
}

function maxAbsDiff(file: string, golden: string): number {
  const a = new Float32Array(readFileSync(file).buffer.slice(0));
  const b = new Float32Array(readFileSync(golden).buffer.slice(0));
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('openchat logits', () => {
  const c = manifest.cases.find((k) => k.id === 'a')!;
  // Compare greedy tokens only up to the first step whose HF margin is within our error.
  const sure = c.greedy_recompute.top1_margin_per_step.findIndex((m) => m < 1e-3);
  const expected = c.greedy_recompute.new_tokens.slice(0, sure < 0 ? undefined : sure);

  for (const device of ['webgpu', 'cpu'] as const) {
    it(`writes golden-matching logits and continues greedily (${device})`, async () => {
      const out = join(dir, `${device}.f32`);
      const args = ['logits', '--ids', c.input_ids.join(','), '--out', out, '--top', '2', '--greedy', String(expected.length)];
      const { stdout } = await cli(device === 'cpu' ? [...args, '--cpu'] : args);
      expect(maxAbsDiff(out, join(GOLDEN, c.logits.file))).toBeLessThan(1.5e-4);
      const lines = stdout.trim().split('\n');
      expect(lines).toHaveLength(c.input_ids.length + 1); // a top-2 line per position, then the JSON ids
      expect(JSON.parse(lines.at(-1)!)).toEqual(expected);
    });
  }

  it('rejects bad input with one clear line', async () => {
    await expect(cli(['logits', '--ids', '1,x'])).rejects.toMatchObject({ stderr: expect.stringMatching(/--ids must be a comma-separated list/) });
    await expect(cli(['logits', '--ids', '1', '--prompt', 'hi'])).rejects.toMatchObject({ stderr: expect.stringMatching(/exactly one of --ids or --prompt/) });
    await expect(cli(['logits', '--ids', '99999'])).rejects.toMatchObject({ stderr: expect.stringMatching(/outside the vocabulary/) });
  });
});
