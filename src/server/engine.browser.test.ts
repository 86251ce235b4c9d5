/**
 * The engine in a tab (GET /engine) in a real browser: headless Chromium on its own WebGPU device
 * (SwiftShader), loading the bundled tiny model from the server and running the same src/ as Node.
 * Its logits for golden cases must match Hugging Face's and the Node run's within the golden
 * tolerance, and a greedy generation in the tab must give the text the Node generator gives.
 * One browser, one page, one model load for the file. Screenshot: .cache/screenshots/engine.png.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ggufFromFolder } from '../model/gguf.testing.ts';
import { loadOpenChat35Files } from '../tokenizer/openchat35.ts';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUNDLED_MODEL_DIR, Generator } from '../generator.ts';
import { validateSamplingParams } from '../sampling/params.ts';
import { browserSkipReason, collectPageErrors, launchChromium, screenshot } from './browser.testing.ts';
import { startServer, type RunningServer } from './server.ts';

const skip = browserSkipReason();

/** What src/web/engine.ts puts on the page's window once a model is loaded (this file has no DOM types). */
interface EngineWindow {
  openchat: { logits(ids: number[]): Promise<number[]> };
}

/** golden/golden.test.ts's tolerance: max |ours - reference| over a case's logits, over the range of HF's. */
const REL_TOL = 1e-5;

interface GoldenCase {
  id: string;
  input_ids: number[];
  logits: { file: string; shape: [number, number] };
}
const manifest = JSON.parse(readFileSync(`${BUNDLED_MODEL_DIR}golden.json`, 'utf8')) as { cases: GoldenCase[] };
/** Two short cases keep SwiftShader's time down: a (16 tokens) and e (1 token). */
const CASES = manifest.cases.filter((c) => c.id === 'a' || c.id === 'e');

function expectedLogits(c: GoldenCase): Float32Array {
  const buf = readFileSync(`${BUNDLED_MODEL_DIR}${c.logits.file}`);
  return new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
}

/** Max |actual - expected| over the range of `range` (HF's logits). */
function relError(actual: ArrayLike<number>, expected: ArrayLike<number>, range: ArrayLike<number>): number {
  expect(actual.length).toBe(expected.length);
  let lo = Infinity;
  let hi = -Infinity;
  let abs = 0;
  for (let i = 0; i < expected.length; i++) {
    lo = Math.min(lo, range[i]!);
    hi = Math.max(hi, range[i]!);
    const d = Math.abs(actual[i]! - expected[i]!);
    abs = Number.isNaN(d) ? Infinity : Math.max(abs, d);
  }
  return abs / (hi - lo);
}

describe.skipIf(skip !== null)('the engine in a Chromium tab', () => {
  let gen: Generator;
  let srv: RunningServer;
  let browser: Browser;
  let page: Page;
  let errors: string[];

  beforeAll(async () => {
    gen = await Generator.load();
    srv = await startServer({ generator: gen, port: 0, logRequests: false });
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1000, height: 640 } });
    errors = collectPageErrors(page);
    await page.goto(`${srv.url}/engine`);
    await page.click('#load-bundled');
    await page.waitForSelector('#generate:enabled, #error:not([hidden])', { timeout: 120_000 });
    expect(await page.isHidden('#error'), await page.textContent('#error') ?? '').toBe(true);
  });

  afterAll(async () => {
    await browser?.close();
    await srv?.close();
    gen?.close();
  });

  it('runs on the tab\'s own WebGPU adapter', async () => {
    expect(await page.textContent('#gpu')).toMatch(/^WebGPU: .+/);
    expect(await page.textContent('#status')).toMatch(/^the bundled tiny model: .* loaded in/);
  });

  it.each(CASES.map((c) => [c.id, c] as const))('golden case %s: the tab\'s logits match Hugging Face\'s and the Node run\'s', async (id, c) => {
    const inTab = await page.evaluate((ids) => (globalThis as unknown as EngineWindow).openchat.logits(ids), c.input_ids);
    const hf = expectedLogits(c);
    gen.model.reset();
    const node = (await gen.model.forward(c.input_ids, { kind: 'all-logits' })).logits!;
    const vsHf = relError(inTab, hf, hf);
    const vsNode = relError(inTab, node, hf);
    expect(vsHf, `case ${id}: tab vs Hugging Face, relative error`).toBeLessThan(REL_TOL);
    expect(vsNode, `case ${id}: tab vs Node, relative error`).toBeLessThan(REL_TOL);
  });

  it('generates greedily in the tab the text the Node generator gives, streamed into the page', async () => {
    const prompt = 'What does a KV cache store?';
    await page.fill('#prompt', prompt);
    await page.fill('#max_tokens', '16');
    await page.fill('#temperature', '0');
    await page.click('#generate');
    await page.waitForSelector('#output.done', { timeout: 60_000 });
    expect(await page.isHidden('#error'), await page.textContent('#error') ?? '').toBe(true);

    let want = '';
    let completion = 0;
    for await (const ev of gen.generate(gen.encodeChat([{ role: 'user', content: prompt }]), validateSamplingParams({ max_tokens: 16, temperature: 0 }))) {
      if (ev.type === 'text') want += ev.text;
      else completion = ev.usage.completion_tokens;
    }
    expect(await page.textContent('#output')).toBe(want);
    expect(await page.textContent('#stats')).toContain(`+ ${completion} completion tokens`);
    await screenshot(page, 'engine');
    expect(errors, errors.join('\n')).toEqual([]);
  });

  it('Stop ends a generation in the tab (finish cancelled)', async () => {
    await page.fill('#max_tokens', '600');
    await page.fill('#temperature', '1');
    await page.click('#generate');
    await expect.poll(() => page.textContent('#output'), { timeout: 30_000 }).not.toBe('');
    await page.click('#stop');
    await page.waitForSelector('#output.done', { timeout: 30_000 });
    const stats = (await page.textContent('#stats')) ?? '';
    expect(stats).toContain('finish cancelled');
    expect(Number(/\+ (\d+) completion tokens/.exec(stats)?.[1])).toBeLessThan(600);
    expect(await page.isEnabled('#generate')).toBe(true);
  });

  it('loads a model folder the user picks (input type=file webkitdirectory), with the same logits', async () => {
    // A checkpoint folder as downloaded: the tiny model's files and a tokenizer.json beside them.
    const dir = mkdtempSync(join(tmpdir(), 'openchat-picked-'));
    try {
      for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(BUNDLED_MODEL_DIR, f), join(dir, f));
      const tokenizer = await loadOpenChat35Files();
      for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(tokenizer.dir, f), join(dir, f));
      await page.setInputFiles('#pick', dir);
      await expect.poll(() => page.textContent('#status'), { timeout: 60_000 }).toMatch(/^4 picked files: .* loaded in/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const c = CASES.find((x) => x.id === 'e')!;
    const inTab = await page.evaluate((ids) => (globalThis as unknown as EngineWindow).openchat.logits(ids), c.input_ids);
    const hf = expectedLogits(c);
    expect(relError(inTab, hf, hf)).toBeLessThan(REL_TOL);
    expect(await page.isHidden('#error'), await page.textContent('#error') ?? '').toBe(true);
  });

  it('loads a GGUF file the user picks (the bundled folder as llama.cpp lays out an F16 GGUF), with the same logits', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'openchat-picked-gguf-'));
    try {
      const file = join(dir, 'tiny-mistral.F16.gguf');
      await ggufFromFolder(BUNDLED_MODEL_DIR, file, { type: 'F16' });
      await page.setInputFiles('#pick-gguf', file);
      await expect.poll(() => page.textContent('#status'), { timeout: 60_000 }).toMatch(/^tiny-mistral\.F16\.gguf: .* loaded in/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // The file has no sliding window (llama.cpp's full attention): a case shorter than the window, where both agree.
    const c = CASES.filter((x) => x.input_ids.length <= 16)[0]!;
    const inTab = await page.evaluate((ids) => (globalThis as unknown as EngineWindow).openchat.logits(ids), c.input_ids);
    const hf = expectedLogits(c);
    expect(relError(inTab, hf, hf)).toBeLessThan(REL_TOL);
    expect(await page.isHidden('#error'), await page.textContent('#error') ?? '').toBe(true);
  });
});
