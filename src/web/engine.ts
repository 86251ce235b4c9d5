/**
 * The engine in a tab: the same Generator as `openchat serve` (tokenizer, model, kernels,
 * sampling), bundled for the browser by src/server/web.ts as /web/engine.js, running on the
 * tab's own WebGPU device. The chat page (src/server/web/) imports it when the user picks "this
 * tab", and talks to it through `engine` (the TabEngine contract, tab_api.ts); nothing is sent to
 * the server but the model's files, which come from a URL (the server's /engine/model/ and
 * /engine/served/, or any folder or .gguf URL) or from files the user picks.
 *
 * The seams that make this the same code as in Node: files through a ModelSource (sources.ts;
 * read by ranges or slices, cached in the tab's storage, cache.ts), the device from navigator.gpu
 * (openGpu, which asks for the adapter's own buffer limits), WGSL sources bundled as text
 * (provideWgsl). `window.openchat` holds the loaded generator, `logits(ids)` (every position's
 * logits) and the last load's byte counts, for the console and the browser tests.
 */
import { Generator } from '../generator.ts';
import { openGpu, type Gpu } from '../gpu/device.ts';
import { provideWgsl } from '../gpu/encoder.ts';
import { loadConfig } from '../model/config.ts';
import { validateSamplingParams } from '../sampling/params.ts';
import type { ModelSource } from '../util/files.ts';
import WGSL from 'openchat:wgsl';
import { WeightCache } from './cache.ts';
import { pickedFiles, ReadMeter, UrlSource } from './sources.ts';
import type { ChatEvent, ChatMessage, ChatParams, LoadedModel, LoadProgress, ModelOrigin, TabEngine } from './tab_api.ts';

provideWgsl(WGSL);

declare global {
  interface Window {
    /** The engine itself, once this module is imported: for the console and the browser tests (the page imports it as a module). */
    openchatEngine?: TabEngine;
    openchat?: {
      generator: Generator;
      /** Every position's logits for `ids`, from an empty cache: [ids.length, vocab_size], row-major. */
      logits(ids: number[]): Promise<number[]>;
      /** Bytes the last load read from the network, the cache and picked files. */
      read: ReadMeter;
    };
  }
}

/** A tab's memory is the limit, not the model's context: at most this many positions. */
const TAB_CONTEXT = 4096;
/**
 * The loader's staging buffer in a tab: a quarter of Node's. A tab's JavaScript memory is what
 * it has for everything; reads of a few MiB keep a load's share of it small.
 */
const TAB_STAGING_BYTES = 8 * 2 ** 20;
/** Where the bundled tiny model is served (src/server/web.ts MODEL_ROUTE). */
const BUNDLED_URL = '/engine/model/';

let gpu: Promise<Gpu> | null = null;
let generator: Generator | null = null;
let loaded: LoadedModel | null = null;
let cache: Promise<WeightCache | string> | null = null;

function device(): Promise<Gpu> {
  if (!gpu) {
    if (!navigator.gpu) return Promise.reject(new Error('this browser has no WebGPU (navigator.gpu); Chromium on Linux needs --enable-unsafe-webgpu'));
    gpu = openGpu(navigator.gpu, (message) => console.error(`WebGPU error: ${message}`));
    gpu.catch(() => (gpu = null));
  }
  return gpu;
}

function weightCache(): Promise<WeightCache | string> {
  cache ??= WeightCache.open();
  return cache;
}

/** Where a model's files are, as the loaders want them: a source, and the model's path in it. */
interface Located {
  files: ModelSource;
  modelDir: string;
  name: string;
  url: UrlSource | null;
}

async function locate(origin: ModelOrigin, meter: ReadMeter, signal: AbortSignal | undefined): Promise<Located> {
  if (origin.kind === 'files') {
    const files = origin.files;
    if (files.length === 0) throw new Error('no files were picked');
    const gguf = files.length === 1 && files[0]!.name.toLowerCase().endsWith('.gguf') ? files[0]! : null;
    const source = pickedFiles(files, '/picked', meter, signal);
    const folder = files[0]!.webkitRelativePath.split('/')[0] || 'picked files';
    return { files: source, modelDir: gguf ? `/picked/${gguf.name}` : '/picked', name: gguf ? gguf.name : folder, url: null };
  }
  const c = await weightCache();
  const opts = { cache: typeof c === 'string' ? null : c, meter, signal, headers: origin.kind === 'url' ? origin.headers : undefined };
  const target = new URL(origin.kind === 'bundled' ? BUNDLED_URL : origin.url, location.href);
  if (target.pathname.toLowerCase().endsWith('.gguf')) {
    const file = decodeURIComponent(target.pathname.split('/').pop()!);
    const source = new UrlSource('/remote', new URL('./', target), opts);
    return { files: source, modelDir: `/remote/${file}`, name: file, url: source };
  }
  if (!target.pathname.endsWith('/')) target.pathname += '/';
  const source = new UrlSource('/remote', target, opts);
  const names = await source.list('/remote');
  const name = origin.kind === 'bundled' ? 'the bundled tiny model' : decodeURIComponent(target.pathname.split('/').filter(Boolean).pop() ?? target.host);
  if (names.includes('config.json')) return { files: source, modelDir: '/remote', name, url: source };
  const ggufs = names.filter((n) => n.toLowerCase().endsWith('.gguf'));
  if (ggufs.length === 1) return { files: source, modelDir: `/remote/${ggufs[0]}`, name: ggufs[0]!, url: source };
  throw new Error(`${target.href} holds no config.json${ggufs.length > 1 ? ` and several .gguf files (${ggufs.join(', ')}): give one's URL` : ' and no .gguf file'}: it is not a model folder`);
}

async function load(origin: ModelOrigin, opts: { onProgress?: (p: LoadProgress) => void; signal?: AbortSignal } = {}): Promise<LoadedModel> {
  const { signal, onProgress } = opts;
  const started = performance.now();
  const meter = new ReadMeter();
  // The model loaded before is let go first: a tab rarely holds two models' memory.
  generator?.close();
  generator = null;
  loaded = null;
  window.openchat = undefined;
  const gpuReady = device();
  const where = await locate(origin, meter, signal);
  try {
    const config = await loadConfig(where.modelDir, where.files);
    const gen = await Generator.load({
      modelDir: where.modelDir,
      files: where.files,
      gpu: await gpuReady,
      contextLength: Math.min(TAB_CONTEXT, config.max_position_embeddings),
      // One conversation at a time: the KV cache holds one sequence, not a server's batch.
      maxBatch: 1,
      stagingBytes: TAB_STAGING_BYTES,
      onProgress: (p) => {
        const seconds = (performance.now() - started) / 1000;
        onProgress?.({
          bytesDone: p.bytesDone,
          bytesTotal: p.bytesTotal,
          bytesPerSecond: seconds > 0 ? (meter.network + meter.cache + meter.picked) / seconds : 0,
          bytesFromCache: meter.cache,
          tensorsDone: p.tensorsDone,
          tensorsTotal: p.tensorsTotal,
        });
      },
    });
    try {
      await where.url?.finish();
    } catch (err) {
      gen.close();
      throw err;
    }
    if (where.url?.cacheProblem) console.warn(where.url.cacheProblem);
    // Asked once a model is cached: a persisted origin's storage is not evicted under pressure.
    if (where.url && navigator.storage?.persist) await navigator.storage.persist().catch(() => false);
    generator = gen;
    loaded = {
      name: where.name,
      bytes: meter.network + meter.cache + meter.picked,
      bytesFromCache: meter.cache,
      seconds: (performance.now() - started) / 1000,
      contextLength: gen.contextLength,
    };
    window.openchat = {
      generator: gen,
      read: meter,
      async logits(ids) {
        gen.model.reset();
        const r = await gen.model.forward(ids, { kind: 'all-logits' });
        return Array.from(r.logits!);
      },
    };
    return loaded;
  } catch (err) {
    await where.url?.abandon();
    throw err;
  }
}

async function* chat(messages: ChatMessage[], params: ChatParams, signal?: AbortSignal): AsyncGenerator<ChatEvent> {
  const gen = generator;
  if (!gen) throw new Error('no model is loaded in this tab: load one first');
  const sampling = validateSamplingParams({
    max_tokens: params.max_tokens,
    temperature: params.temperature,
    top_p: params.top_p,
    ...(params.seed === undefined ? {} : { seed: params.seed }),
  });
  const ids = gen.encodeChat(messages, params.condition);
  for await (const ev of gen.generate(ids, sampling, signal)) {
    if (ev.type === 'text') yield { type: 'text', text: ev.text };
    else {
      yield {
        type: 'done',
        finishReason: ev.finishReason,
        usage: { prompt_tokens: ev.usage.prompt_tokens, completion_tokens: ev.usage.completion_tokens },
        timeToFirstTokenMs: ev.timings.timeToFirstToken * 1000,
        decodeTokensPerSecond: ev.timings.decodeTokensPerSecond,
      };
    }
  }
}

async function withCache<T>(f: (c: WeightCache) => Promise<T>, otherwise: T): Promise<T> {
  const c = await weightCache();
  return typeof c === 'string' ? otherwise : f(c);
}

export const engine: TabEngine = {
  async adapter() {
    const r = (await device()).report;
    return `${r.description || r.architecture || r.vendor}${r.isSoftware ? ' (software)' : ''}`;
  },
  load,
  loaded: () => loaded,
  chat,
  cached: () => withCache((c) => c.list(), []),
  deleteCached: (key) => withCache((c) => c.delete(key), undefined),
  async storage() {
    const { usage = 0, quota = 0 } = (await navigator.storage?.estimate?.()) ?? {};
    const persisted = (await navigator.storage?.persisted?.()) ?? false;
    return { usage, quota, persisted };
  },
};

window.openchatEngine = engine;
