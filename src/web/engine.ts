/**
 * The engine in a tab (GET /engine): the same Generator as `openchat serve` (tokenizer, model,
 * kernels, sampling), bundled for the browser by src/server/web.ts, running on the tab's own
 * WebGPU device. The model folder comes from the server (the bundled tiny model, /engine/model/)
 * or from files the user picks; nothing is sent back.
 *
 * The seams that make this the same code as in Node: files through a ModelSource (sources.ts),
 * the device from navigator.gpu (openGpu), WGSL sources bundled as text (provideWgsl).
 * `window.openchat` holds the loaded generator and `logits(ids)` (every position's logits), for
 * the console and the browser tests.
 */
import { Generator } from '../generator.ts';
import { openGpu, type Gpu } from '../gpu/device.ts';
import { provideWgsl } from '../gpu/encoder.ts';
import { validateSamplingParams } from '../sampling/params.ts';
import WGSL from 'openchat:wgsl';
import { fetchFolder, pickedFolder, type FetchProgress, type MemorySource } from './sources.ts';

provideWgsl(WGSL);

declare global {
  interface Window {
    openchat?: {
      generator: Generator;
      /** Every position's logits for `ids`, from an empty cache: [ids.length, vocab_size], row-major. */
      logits(ids: number[]): Promise<number[]>;
    };
  }
}

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
}

const ui = {
  gpu: byId<HTMLSpanElement>('gpu'),
  loadBundled: byId<HTMLButtonElement>('load-bundled'),
  pick: byId<HTMLInputElement>('pick'),
  pickGguf: byId<HTMLInputElement>('pick-gguf'),
  status: byId<HTMLParagraphElement>('status'),
  maxTokens: byId<HTMLInputElement>('max_tokens'),
  temperature: byId<HTMLInputElement>('temperature'),
  seed: byId<HTMLInputElement>('seed'),
  prompt: byId<HTMLTextAreaElement>('prompt'),
  generate: byId<HTMLButtonElement>('generate'),
  stop: byId<HTMLButtonElement>('stop'),
  output: byId<HTMLPreElement>('output'),
  stats: byId<HTMLParagraphElement>('stats'),
  error: byId<HTMLParagraphElement>('error'),
};

let gpu: Promise<Gpu> | null = null;
let generator: Generator | null = null;
let running: AbortController | null = null;

function showError(err: unknown): void {
  ui.error.hidden = err === null;
  ui.error.textContent = err === null ? '' : err instanceof Error ? err.message : String(err);
}

function device(): Promise<Gpu> {
  if (!gpu) {
    if (!navigator.gpu) throw new Error('this browser has no WebGPU (navigator.gpu); Chromium on Linux needs --enable-unsafe-webgpu');
    gpu = openGpu(navigator.gpu, (message) => console.error(`WebGPU error: ${message}`));
    gpu.then(
      (g) => (ui.gpu.textContent = `WebGPU: ${g.report.description || g.report.architecture || g.report.vendor}${g.report.isSoftware ? ' (software)' : ''}`),
      () => (gpu = null),
    );
  }
  return gpu;
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

/** Loads the model read by `read`: its folder, or the file `file` in it (a GGUF file). */
async function load(what: string, read: (progress: (p: FetchProgress) => void) => Promise<MemorySource>, file?: string): Promise<void> {
  showError(null);
  ui.generate.disabled = true;
  ui.loadBundled.disabled = true;
  try {
    running?.abort();
    generator?.close();
    generator = null;
    ui.status.textContent = `reading ${what}...`;
    const files = await read((p) => (ui.status.textContent = `read ${p.file} (${mib(p.bytes)})`));
    const started = performance.now();
    generator = await Generator.load({
      modelDir: file === undefined ? files.dir : `${files.dir}/${file}`,
      files,
      gpu: await device(),
      // A tab's memory is the limit, not the model's context: 1024 positions are plenty here.
      contextLength: 1024,
      onProgress: (p) => (ui.status.textContent = `loading: ${p.tensorsDone}/${p.tensorsTotal} tensors`),
    });
    const loaded = generator;
    ui.status.textContent = `${what}: ${mib(files.totalBytes)}, loaded in ${((performance.now() - started) / 1000).toFixed(1)} s`;
    window.openchat = {
      generator: loaded,
      async logits(ids) {
        loaded.model.reset();
        const r = await loaded.model.forward(ids, { kind: 'all-logits' });
        return Array.from(r.logits!);
      },
    };
    ui.generate.disabled = false;
  } catch (err) {
    ui.status.textContent = 'no model loaded';
    showError(err);
  } finally {
    ui.loadBundled.disabled = false;
  }
}

async function generate(): Promise<void> {
  if (!generator || running) return;
  showError(null);
  const gen = generator;
  const abort = new AbortController();
  running = abort;
  ui.generate.disabled = true;
  ui.stop.disabled = false;
  ui.output.textContent = '';
  ui.stats.textContent = '';
  ui.output.classList.remove('done');
  try {
    const params = validateSamplingParams({
      max_tokens: Number(ui.maxTokens.value),
      temperature: Number(ui.temperature.value),
      ...(ui.seed.value.trim() === '' ? {} : { seed: Number(ui.seed.value) }),
    });
    const ids = gen.encodeChat([{ role: 'user', content: ui.prompt.value }]);
    for await (const ev of gen.generate(ids, params, abort.signal)) {
      if (ev.type === 'text') ui.output.textContent += ev.text;
      else {
        const t = ev.timings;
        ui.stats.textContent =
          `${ev.usage.prompt_tokens} prompt + ${ev.usage.completion_tokens} completion tokens, finish ${ev.finishReason}, seed ${ev.seed}; ` +
          `first token ${t.timeToFirstToken.toFixed(2)} s, ${t.decodeTokensPerSecond.toFixed(1)} tokens/s`;
      }
    }
  } catch (err) {
    showError(err);
  } finally {
    ui.output.classList.add('done');
    running = null;
    ui.generate.disabled = false;
    ui.stop.disabled = true;
  }
}

ui.loadBundled.addEventListener('click', () => void load('the bundled tiny model', (p) => fetchFolder(new URL('/engine/model/', location.href).href, '/tiny-mistral', p)));
ui.pick.addEventListener('change', () => {
  const files = [...(ui.pick.files ?? [])];
  if (files.length) void load(`${files.length} picked files`, (p) => pickedFolder(files, '/picked', p));
});
ui.pickGguf.addEventListener('change', () => {
  const file = ui.pickGguf.files?.[0];
  if (file) void load(file.name, (p) => pickedFolder([file], '/picked', p), file.name);
});
ui.generate.addEventListener('click', () => void generate());
ui.stop.addEventListener('click', () => running?.abort());
if (!navigator.gpu) showError(new Error('this browser has no WebGPU (navigator.gpu); Chromium on Linux needs --enable-unsafe-webgpu'));
