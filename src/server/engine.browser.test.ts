/**
 * The engine in a tab in a real browser: headless Chromium on its own WebGPU device (SwiftShader),
 * the chat page at /engine (the engine's panel, src/server/web/tab_panel.ts) over the engine
 * module (src/web/engine.ts), loading models from the server by range requests, from picked files
 * by File.slice(), and from the tab's own cache (OPFS) on the next visit.
 *
 *  - The bundled tiny model: its logits for golden cases match Hugging Face's and the Node run's,
 *    greedy text in the tab is the Node generator's, a reload loads it from the cache with no
 *    weight bytes over the network, and a picked folder, a picked q8 folder and a picked GGUF file
 *    give the same logits (the q8 folder: Node's for it).
 *  - A synthetic q4 folder of over 500 MiB (bench/synthetic.ts's `tab` shape, --quantize q4): picked, fetched from
 *    the server's /engine/served/, and loaded again from the cache; during each load the tab's
 *    JavaScript memory (V8's heap and every ArrayBuffer's backing store, from the DevTools
 *    protocol) stays under 150 MiB. Its logits are checked against Node's once, after the load
 *    from the cache: a picked file and a cached one are read by the same code (blobFile), and the
 *    cache holds what the ranged download fetched, so that one check covers the bytes of all
 *    three (SwiftShader takes 13 s or more per token of a model this size, on every core, which
 *    the other test files share).
 *
 * Screenshot: .cache/screenshots/engine.png.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, CDPSession, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSyntheticCheckpoint, writeSyntheticTokenizer } from '../../bench/synthetic.ts';
import { BUNDLED_MODEL_DIR, Generator } from '../generator.ts';
import { ggufFromFolder } from '../model/gguf.testing.ts';
import { quantizeCheckpoint } from '../model/quantize.ts';
import { validateSamplingParams } from '../sampling/params.ts';
import { loadOpenChat35Files } from '../tokenizer/openchat35.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed } from '../util/testing.ts';
import type { ChatEvent } from '../web/tab_api.ts';
import { browserSkipReason, collectPageErrors, launchChromium, screenshot } from './browser.testing.ts';
import { startServer, type RunningServer } from './server.ts';

const skip = browserSkipReason();
const seed = freshSeed();
const tag = `(test seed ${seed})`;

/** What src/web/engine.ts puts on the page's window: the engine, and what a load leaves (this file has no DOM types). */
interface EngineWindow {
  openchatEngine: { chat(messages: { role: string; content: string }[], params: object): AsyncIterable<ChatEvent> };
  openchat: { logits(ids: number[]): Promise<number[]>; read: { network: number; cache: number; picked: number } };
}

/** golden/golden.test.ts's tolerance: max |ours - reference| over a case's logits, over the range of HF's. */
const REL_TOL = 1e-5;
/** The tab's JavaScript memory while loading must stay under this (the bound). */
const LOAD_MEMORY_LIMIT = 150 * 2 ** 20;

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

/** Max |actual - expected| over the range of `range` (the reference's logits). */
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

function tabLogits(page: Page, ids: number[]): Promise<number[]> {
  return page.evaluate((x) => (globalThis as unknown as EngineWindow).openchat.logits(x), ids);
}

function tabRead(page: Page): Promise<EngineWindow['openchat']['read']> {
  return page.evaluate(() => ({ ...(globalThis as unknown as EngineWindow).openchat.read }));
}

/** The status line once a load through the panel ends (its text), or the page's error. */
async function panelLoaded(page: Page, name: string): Promise<string> {
  // Polled from here: a page-side predicate would be an eval, which the page's CSP refuses.
  const until = Date.now() + 180_000;
  while (!((await page.textContent('#load-status')) ?? '').startsWith(`${name}: `) && !(await page.isVisible('#error'))) {
    if (Date.now() > until) throw new Error(`${name} did not load in 180 s; the panel says: ${await page.textContent('#load-status')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  expect(await page.isHidden('#error'), (await page.textContent('#error')) ?? '').toBe(true);
  return (await page.textContent('#load-status'))!;
}

/** Requests the page makes for a model's weight file (GET, with or without a range), counted from now. */
function countWeightRequests(page: Page, file: string): { gets: number } {
  const counter = { gets: 0 };
  page.on('request', (r) => {
    if (r.method() === 'GET' && new URL(r.url()).pathname.endsWith(`/${file}`)) counter.gets++;
  });
  return counter;
}

/**
 * The peak of the page's JavaScript memory while `run` runs: V8's used heap plus the backing
 * stores of every ArrayBuffer (where a loader's bytes live), sampled every 50 ms through the
 * DevTools protocol. performance.memory leaves out the backing stores, so it would miss exactly
 * the copies of the weights this bounds.
 */
async function peakMemory<T>(cdp: CDPSession, run: () => Promise<T>): Promise<{ result: T; peak: number }> {
  let peak = 0;
  let sampling = true;
  const sample = async () => {
    while (sampling) {
      const h = (await cdp.send('Runtime.getHeapUsage')) as { usedSize: number; backingStorageSize?: number };
      expect(h.backingStorageSize, 'this Chromium reports ArrayBuffer backing stores (Runtime.getHeapUsage backingStorageSize)').toBeTypeOf('number');
      peak = Math.max(peak, h.usedSize + h.backingStorageSize!);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const sampler = sample();
  try {
    return { result: await run(), peak };
  } finally {
    sampling = false;
    await sampler;
  }
}

describe.skipIf(skip !== null)('the engine in a Chromium tab: the bundled tiny model', () => {
  let gen: Generator;
  let srv: RunningServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let errors: string[];

  beforeAll(async () => {
    gen = await Generator.load();
    srv = await startServer({ generator: gen, port: 0, logRequests: false });
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1200, height: 720 } });
    page = await context.newPage();
    errors = collectPageErrors(page);
    await page.goto(`${srv.url}/engine`);
    expect(await page.inputValue('#backend')).toBe('tab');
    await page.click('#load-bundled');
    await panelLoaded(page, 'the bundled tiny model');
  });

  afterAll(async () => {
    await browser?.close();
    await srv?.close();
    gen?.close();
  });

  it('loads over the network from /engine/model/, on the tab\'s own WebGPU adapter, and caches the files', async () => {
    expect(await page.textContent('#gpu')).toMatch(/swiftshader|SwiftShader|WebGPU: .+/);
    const read = await tabRead(page);
    const size = readFileSync(`${BUNDLED_MODEL_DIR}model.safetensors`).byteLength;
    expect(read.cache).toBe(0);
    expect(read.network).toBeGreaterThanOrEqual(size);
    await expect.poll(() => page.$$eval('#cached li', (lis) => lis.map((li) => li.textContent ?? '').join('\n'))).toContain('/engine/model/model.safetensors');
  });

  it.each(CASES.map((c) => [c.id, c] as const))('golden case %s: the tab\'s logits match Hugging Face\'s and the Node run\'s', async (id, c) => {
    const inTab = await tabLogits(page, c.input_ids);
    const hf = expectedLogits(c);
    gen.model.reset();
    const node = (await gen.model.forward(c.input_ids, { kind: 'all-logits' })).logits!;
    expect(relError(inTab, hf, hf), `case ${id}: tab vs Hugging Face, relative error`).toBeLessThan(REL_TOL);
    expect(relError(inTab, node, hf), `case ${id}: tab vs Node, relative error`).toBeLessThan(REL_TOL);
  });

  it('generates greedily in the tab the text the Node generator gives, and the page shows its speed', async () => {
    const prompt = `What does a KV cache store? ${new Rng(seed).int(0, 1000)}`;
    const events = (await page.evaluate(async (p) => {
      const out: ChatEvent[] = [];
      for await (const ev of (globalThis as unknown as EngineWindow).openchatEngine.chat([{ role: 'user', content: p }], { max_tokens: 16, temperature: 0 })) out.push(ev);
      return out;
    }, prompt)) as ChatEvent[];
    let want = '';
    let completion = 0;
    for await (const ev of gen.generate(gen.encodeChat([{ role: 'user', content: prompt }]), validateSamplingParams({ max_tokens: 16, temperature: 0 }))) {
      if (ev.type === 'text') want += ev.text;
      else completion = ev.usage.completion_tokens;
    }
    expect(events.filter((e) => e.type === 'text').map((e) => (e as { text: string }).text).join(''), tag).toBe(want);
    const done = events.at(-1)!;
    expect(done.type).toBe('done');
    if (done.type === 'done') {
      expect(done.usage.completion_tokens).toBe(completion);
      expect(done.timeToFirstTokenMs).toBeGreaterThan(0);
    }

    // Through the page: the answer's stats line says the speed and the first token's time.
    await page.fill('#max_tokens', '8');
    await page.fill('#temperature', '0');
    await page.fill('#input', prompt);
    await page.press('#input', 'Enter');
    await page.waitForSelector('#messages li.assistant.done', { timeout: 60_000 });
    const stats = (await page.textContent('#messages li.assistant.done .stats')) ?? '';
    expect(stats).toContain('tokens/s');
    expect(stats).toContain('first token');
    await screenshot(page, 'engine');
    expect(errors, errors.join('\n')).toEqual([]);
  });

  it('a reload loads from the tab\'s cache: no weight bytes over the network, the same logits; a deleted file is fetched again', async () => {
    await page.reload();
    const weights = countWeightRequests(page, 'model.safetensors');
    await page.click('#load-bundled');
    const status = await panelLoaded(page, 'the bundled tiny model');
    const read = await tabRead(page);
    expect(weights.gets, 'GET requests for model.safetensors after the reload').toBe(0);
    expect(read.network, 'bytes over the network after the reload').toBe(0);
    expect(read.cache).toBeGreaterThan(0);
    expect(status).toMatch(/[1-9][\d.]* MiB from the cache/);
    const c = CASES.find((x) => x.id === 'e')!;
    const hf = expectedLogits(c);
    expect(relError(await tabLogits(page, c.input_ids), hf, hf)).toBeLessThan(REL_TOL);

    // Deleting the weights' entry: the next load fetches them again, and caches them again.
    const entry = page.locator('#cached li', { hasText: '/engine/model/model.safetensors' });
    await entry.locator('button.delete').click();
    await expect.poll(() => page.locator('#cached li', { hasText: '/engine/model/model.safetensors' }).count()).toBe(0);
    await page.click('#load-bundled');
    await panelLoaded(page, 'the bundled tiny model');
    expect(weights.gets).toBeGreaterThan(0);
    expect((await tabRead(page)).network).toBeGreaterThanOrEqual(readFileSync(`${BUNDLED_MODEL_DIR}model.safetensors`).byteLength);
  });

  it('loads a model folder the user picks (webkitdirectory), read by slices, with the same logits', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'openchat-picked-'));
    try {
      for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(BUNDLED_MODEL_DIR, f), join(dir, f));
      const tokenizer = await loadOpenChat35Files();
      for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(tokenizer.dir, f), join(dir, f));
      await page.setInputFiles('#pick', dir);
      await panelLoaded(page, dir.split('/').pop()!);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const read = await tabRead(page);
    expect(read.network + read.cache).toBe(0);
    expect(read.picked).toBeGreaterThan(0);
    const c = CASES.find((x) => x.id === 'e')!;
    const hf = expectedLogits(c);
    expect(relError(await tabLogits(page, c.input_ids), hf, hf)).toBeLessThan(REL_TOL);
  });

  it('loads a q8 folder the user picks (written by openchat quantize), with the logits Node gives for it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'openchat-picked-q8-'));
    try {
      await quantizeCheckpoint(BUNDLED_MODEL_DIR, dir, 'q8');
      const tokenizer = await loadOpenChat35Files();
      for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(tokenizer.dir, f), join(dir, f));
      const c = CASES.find((x) => x.id === 'e')!;
      const q8 = await Generator.load({ modelDir: dir, maxBatch: 1 });
      let node: Float32Array;
      try {
        node = (await q8.model.forward(c.input_ids, { kind: 'all-logits' })).logits!;
      } finally {
        q8.close();
      }
      await page.setInputFiles('#pick', dir);
      await panelLoaded(page, dir.split('/').pop()!);
      expect(relError(await tabLogits(page, c.input_ids), node, node)).toBeLessThan(REL_TOL);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('loads a GGUF file the user picks (the bundled folder as llama.cpp lays out an F16 GGUF), with the same logits', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'openchat-picked-gguf-'));
    try {
      const file = join(dir, 'tiny-mistral.F16.gguf');
      await ggufFromFolder(BUNDLED_MODEL_DIR, file, { type: 'F16' });
      await page.setInputFiles('#pick-gguf', file);
      await panelLoaded(page, 'tiny-mistral.F16.gguf');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // The file has no sliding window (llama.cpp's full attention): a case shorter than the window, where both agree.
    const c = CASES.filter((x) => x.input_ids.length <= 16)[0]!;
    const hf = expectedLogits(c);
    expect(relError(await tabLogits(page, c.input_ids), hf, hf)).toBeLessThan(REL_TOL);
  });
});

describe.skipIf(skip !== null)('the engine in a Chromium tab: a q4 folder of over 500 MiB', () => {
  let dir: string;
  let bytes: number;
  let gen: Generator;
  let srv: RunningServer;
  let browser: Browser;
  let page: Page;
  let cdp: CDPSession;
  /** One token's logits from Node (lavapipe): SwiftShader takes seconds per token of a model this size. */
  let ids: number[];
  let node: Float32Array;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'openchat-large-q4-'));
    const written = await writeSyntheticCheckpoint(dir, 'tab', { quantize: 'q4', seed });
    await writeSyntheticTokenizer(dir, written.config.vocab_size);
    bytes = written.totalBytes;
    expect(bytes).toBeGreaterThan(500 * 2 ** 20);
    gen = await Generator.load({ modelDir: dir, maxBatch: 1, contextLength: 64 });
    ids = [new Rng(seed).int(3, written.config.vocab_size)];
    node = (await gen.model.forward(ids, { kind: 'all-logits' })).logits!;
    srv = await startServer({ generator: gen, port: 0, logRequests: false });
    browser = await launchChromium();
    page = await (await browser.newContext()).newPage();
    cdp = await page.context().newCDPSession(page);
    await page.goto(`${srv.url}/engine`);
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await srv?.close();
    gen?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** The tab's logits for `ids`, against Node's: f32 noise (a reduction's order may differ between SwiftShader and lavapipe). */
  async function expectNodeLogits(): Promise<void> {
    const inTab = await tabLogits(page, ids);
    expect(relError(inTab, node, node), `${tag} tab vs Node, relative error`).toBeLessThan(REL_TOL);
  }

  it('picked (webkitdirectory): read by ranges of its object URL, the tab\'s memory under 150 MiB while loading', async () => {
    const { peak } = await peakMemory(cdp, async () => {
      await page.setInputFiles('#pick', dir);
      return panelLoaded(page, dir.split('/').pop()!);
    });
    process.stderr.write(`engine in a tab: picked ${(bytes / 2 ** 20).toFixed(0)} MiB q4 folder, JavaScript memory peak ${(peak / 2 ** 20).toFixed(1)} MiB\n`);
    expect(peak, `peak JavaScript memory while loading ${bytes} bytes`).toBeLessThan(LOAD_MEMORY_LIMIT);
    expect((await tabRead(page)).picked).toBeGreaterThanOrEqual(bytes);
  }, 180_000);

  it('Cancel stops a load from the server midway; nothing half-downloaded stays in the cache', async () => {
    await page.fill('#model-url', '/engine/served/');
    await page.click('#load-url');
    await expect.poll(() => page.textContent('#load-status'), { timeout: 60_000, interval: 50 }).toMatch(/MiB\/s, [1-9]\d*\/\d+ tensors/);
    await page.click('#cancel-load');
    await expect.poll(() => page.textContent('#load-status'), { timeout: 60_000 }).toMatch(/cancelled/);
    expect(await page.isHidden('#error'), (await page.textContent('#error')) ?? '').toBe(true);
    expect(await page.$$eval('#cached li', (lis) => lis.map((li) => li.textContent ?? '').join('\n'))).not.toContain('/engine/served/model.safetensors');
  }, 120_000);

  it('from the server by range requests (/engine/served/), then from the cache after a reload with no weight bytes over the network, with Node\'s logits', async () => {
    const weights = countWeightRequests(page, 'model.safetensors');
    /** Loads the server's model through the panel, under the memory bound. */
    const loadServed = async (when: string) => {
      const { result, peak } = await peakMemory(cdp, async () => {
        await page.fill('#model-url', '/engine/served/');
        await page.click('#load-url');
        return panelLoaded(page, 'served');
      });
      process.stderr.write(`engine in a tab: ${result} (${when}); JavaScript memory peak ${(peak / 2 ** 20).toFixed(1)} MiB\n`);
      expect(peak, `peak JavaScript memory while loading ${bytes} bytes (${when})`).toBeLessThan(LOAD_MEMORY_LIMIT);
    };
    await loadServed('network');
    expect(weights.gets).toBeGreaterThan(1); // ranges, not one whole-file download
    expect((await tabRead(page)).network).toBeGreaterThanOrEqual(bytes);

    await page.reload();
    weights.gets = 0;
    await loadServed('reload');
    expect(weights.gets, 'GET requests for model.safetensors after the reload').toBe(0);
    const read = await tabRead(page);
    expect(read.network).toBe(0);
    expect(read.cache).toBeGreaterThanOrEqual(bytes);
    await expectNodeLogits();
  }, 240_000);
});
