/**
 * `--lora DIR` end to end through the real CLI: `openchat logits` under an adapter
 * written here in PEFT's layout reproduces the merged CPU reference (in this process)
 * at f32 noise, on WebGPU and with --cpu; `generate` and `chat` run under it; a bad
 * adapter is one line on stderr.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, runCli, type Run } from './run-cli.ts';
import { loadConfig } from '../src/model/config.ts';
import { CpuModel } from '../src/model/cpu.ts';
import { loadLora } from '../src/model/lora.ts';
import { allModules, writePeftAdapter } from '../src/model/lora.testing.ts';
import { OpenChatTokenizer } from '../src/tokenizer/index.ts';
import { freshSeed, maxAbsError } from '../src/util/testing.ts';

const TINY = join(ROOT, 'golden/tiny-mistral/');
const config = await loadConfig(TINY);
const dir = mkdtempSync(join(tmpdir(), 'openchat-lora-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const seed = freshSeed();
const adapter = join(dir, 'my-adapter');
await writePeftAdapter(adapter, config, {
  seed,
  config: { r: 6, lora_alpha: 12, target_modules: ['q_proj', 'v_proj', 'up_proj', 'down_proj'] },
  modules: allModules(config, 6, ['q_proj', 'v_proj', 'up_proj', 'down_proj']),
  dtype: 'F16',
});
const ids = [1, 420, 6316, 28725, 1526, 28808, 851, 349, 264, 1369, 302, 272, 13446, 2006, 28723, 415, 2936, 8734, 285, 1142];

async function cli(args: string[]): Promise<Run> {
  const r = await runCli(args);
  if (r.code !== 0) throw Object.assign(new Error(`exit ${r.code}: ${r.stderr}`), r);
  return r;
}

function range(a: Float32Array): number {
  return a.reduce((m, v) => Math.max(m, v), -Infinity) - a.reduce((m, v) => Math.min(m, v), Infinity);
}

describe('openchat --lora', () => {
  let merged: Float32Array;
  let base: Float32Array;
  beforeAll(async () => {
    merged = (await CpuModel.load(TINY, { lora: await loadLora(adapter, config) })).forward(ids);
    base = (await CpuModel.load(TINY)).forward(ids);
  });

  for (const device of ['webgpu', 'cpu'] as const) {
    it(`logits --lora reproduces the merged reference at f32 noise (${device})`, async () => {
      const out = join(dir, `${device}.f32`);
      const args = ['logits', '--model', TINY, '--lora', adapter, '--ids', ids.join(','), '--out', out, '--top', '0'];
      await cli(device === 'cpu' ? [...args, '--cpu'] : args);
      const got = new Float32Array(readFileSync(out).buffer.slice(0));
      expect(maxAbsError(got, merged), `seed ${seed}`).toBeLessThan(1e-5 * range(merged));
      expect(maxAbsError(got, base), 'the adapter changes the logits').toBeGreaterThan(1e-2 * range(base));
    });
  }

  it('generate and chat run under the adapter: greedy text is the adapter\'s greedy continuation', async () => {
    const tokenizer = await OpenChatTokenizer.load(TINY);
    const { stdout: greedyOut } = await cli(['logits', '--lora', adapter, '--prompt', 'The answer is', '--top', '0', '--greedy', '6']);
    const greedy = JSON.parse(greedyOut.trim()) as number[];
    const stop = greedy.findIndex((t) => tokenizer.stopIds.includes(t) || config.eos_token_id.includes(t));
    const expected = tokenizer.decode(stop < 0 ? greedy : greedy.slice(0, stop), { skipSpecial: true });
    const gen = await cli(['generate', '--lora', adapter, '--raw', '--prompt', 'The answer is', '--temperature', '0', '--max-tokens', '6']);
    expect(gen.stdout).toBe(expected + '\n');
    const chat = await runCli(['chat', '--lora', adapter, '--temperature', '0', '--max-tokens', '3'], 'Hi\n');
    expect(chat.code, chat.stderr).toBe(0);
  }, 120_000);

  it('a missing or unsupported adapter is one line on stderr', async () => {
    const missing = await runCli(['logits', '--lora', join(dir, 'nowhere'), '--ids', '1,2']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^openchat: adapter folder .*nowhere does not exist\n$/m);
    const dora = join(dir, 'dora');
    await writePeftAdapter(dora, config, { seed, config: { r: 2, lora_alpha: 2, target_modules: ['q_proj'] }, modules: allModules(config, 2, ['q_proj']) });
    writeFileSync(join(dora, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 2, lora_alpha: 2, target_modules: ['q_proj'], use_dora: true }));
    const gen = await runCli(['generate', '--lora', dora, '--prompt', 'hi']);
    expect(gen.code).toBe(1);
    expect(gen.stderr).toMatch(/openchat: .*dora\/adapter_config\.json: DoRA .* is not supported/);
  }, 60_000);

  it('serve --lora takes NAME=DIR, and a name the base model already has is refused before loading', async () => {
    const bad = await runCli(['serve', '--port', '0', '--lora', adapter]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/openchat: --lora takes NAME=DIR .*; got ".*my-adapter"/);
    const clash = await runCli(['serve', '--port', '0', '--lora', `openchat-3.5=${adapter}`]);
    expect(clash.code).toBe(1);
    expect(clash.stderr).toMatch(/openchat: the LoRA adapter name 'openchat-3\.5' is already a name of the base model/);
  }, 60_000);
});
