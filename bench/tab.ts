/**
 * The engine in a tab: how long a model takes to load in headless Chromium (SwiftShader's WebGPU)
 * from picked files, from the server by range requests, and from the tab's cache after a reload,
 * and the tab's peak JavaScript memory meanwhile (V8's used heap plus every ArrayBuffer's backing
 * store, from the DevTools protocol's Runtime.getHeapUsage, sampled every 50 ms).
 *
 *   npx tsx bench/tab.ts [DIR]
 *
 * DIR: a model folder (default: bench/synthetic.ts's `tab` shape as q4, 513 MiB, written to a
 * temporary folder: the folder src/server/engine.browser.test.ts loads). Prints a Markdown table for bench/RESULTS.md.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { CDPSession, Page } from 'playwright-core';
import { Generator } from '../src/generator.ts';
import { launchChromium } from '../src/server/browser.testing.ts';
import { startServer } from '../src/server/server.ts';
import { writeSyntheticCheckpoint, writeSyntheticTokenizer } from './synthetic.ts';

interface Row {
  how: string;
  status: string;
  seconds: number;
  peakMiB: number;
}

async function measure(page: Page, cdp: CDPSession, how: string, start: () => Promise<void>, name: string): Promise<Row> {
  let peak = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const h = (await cdp.send('Runtime.getHeapUsage')) as { usedSize: number; backingStorageSize?: number };
      peak = Math.max(peak, h.usedSize + (h.backingStorageSize ?? 0));
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const t0 = performance.now();
  await start();
  while (!((await page.textContent('#load-status')) ?? '').startsWith(`${name}: `)) {
    if (await page.isVisible('#error')) throw new Error(`${how}: ${await page.textContent('#error')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const seconds = (performance.now() - t0) / 1000;
  sampling = false;
  await sampler;
  return { how, status: (await page.textContent('#load-status'))!, seconds, peakMiB: peak / 2 ** 20 };
}

async function main(): Promise<void> {
  const given = process.argv[2];
  const dir = given ?? mkdtempSync(join(tmpdir(), 'openchat-tab-bench-'));
  try {
    if (!given) {
      const w = await writeSyntheticCheckpoint(dir, 'tab', { quantize: 'q4', seed: 1 });
      await writeSyntheticTokenizer(dir, w.config.vocab_size);
    }
    const gen = await Generator.load({ modelDir: dir, maxBatch: 1, contextLength: 64 });
    const srv = await startServer({ generator: gen, port: 0, logRequests: false });
    const browser = await launchChromium();
    try {
      const page = await (await browser.newContext()).newPage();
      const cdp = await page.context().newCDPSession(page);
      await page.goto(`${srv.url}/engine`);
      const rows: Row[] = [];
      rows.push(await measure(page, cdp, 'picked folder (read by ranges of its object URL)', () => page.setInputFiles('#pick', dir), basename(dir)));
      const byUrl = async () => {
        await page.fill('#model-url', '/engine/served/');
        await page.click('#load-url');
      };
      rows.push(await measure(page, cdp, 'from the server (range requests), cached on the way', byUrl, 'served'));
      await page.reload();
      rows.push(await measure(page, cdp, 'after a reload, from the cache (OPFS)', byUrl, 'served'));
      console.log(`| load | seconds | MiB/s | peak JavaScript memory | the panel's line |\n|---|---|---|---|---|`);
      for (const r of rows) {
        const mib = Number(/: ([\d.]+) MiB/.exec(r.status)?.[1] ?? 0);
        console.log(`| ${r.how} | ${r.seconds.toFixed(1)} | ${(mib / r.seconds).toFixed(0)} | ${r.peakMiB.toFixed(0)} MiB | ${r.status} |`);
      }
    } finally {
      await browser.close();
      await srv.close();
      gen.close();
    }
  } finally {
    if (!given) rmSync(dir, { recursive: true, force: true });
  }
}

await main();
