/**
 * The chat page's panel for the engine in this tab (#tab-panel, shown when the backend is "this
 * tab"): which WebGPU adapter the tab has, loading a model (the bundled tiny one, a picked folder
 * or GGUF file, or a URL) with its progress and a cancel button, and the tab's weight cache.
 *
 * The engine is its own bundle, /web/engine.js, imported the first time this panel is shown: a
 * page that only talks to the server never downloads it. The import's URL is a variable so that
 * esbuild leaves it to the browser instead of bundling the engine into the page.
 */
import type { CachedFile, LoadedModel, LoadProgress, ModelOrigin, TabEngine } from '../../web/tab_api.ts';

const ENGINE_URL = '/web/engine.js';

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
}

/** `bytes` in MiB with one decimal ("12.3"). */
export function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}

/** A size for people: KiB, MiB or GiB, whichever keeps the number readable. */
function size(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  if (bytes >= 2 ** 20) return `${mib(bytes)} MiB`;
  return `${(bytes / 2 ** 10).toFixed(1)} KiB`;
}

export function progressText(p: LoadProgress): string {
  return `${mib(p.bytesDone)} / ${mib(p.bytesTotal)} MiB, ${mib(p.bytesPerSecond)} MiB/s, ${p.tensorsDone}/${p.tensorsTotal} tensors` +
    (p.bytesFromCache > 0 ? `, ${mib(p.bytesFromCache)} MiB from the cache` : '');
}

export function loadedText(m: LoadedModel): string {
  return `${m.name}: ${mib(m.bytes)} MiB, loaded in ${m.seconds.toFixed(1)} s, ${mib(m.bytesFromCache)} MiB from the cache`;
}

function isAbort(err: unknown): boolean {
  return err instanceof DOMException ? err.name === 'AbortError' : (err as Error | null)?.name === 'AbortError';
}

export interface TabPanelHooks {
  /** Shows an error in the page's #error (null clears it). */
  showError(text: string | null): void;
  /** The loaded model changed (or loading started or ended): the header and the send button follow. */
  changed(): void;
  /** The API key typed into the page ('' for none): the server's own model (/engine/served/) is behind it when the server has keys. */
  apiKey(): string;
}

export class TabPanel {
  private readonly ui = {
    panel: byId<HTMLElement>('tab-panel'),
    gpu: byId<HTMLElement>('gpu'),
    loadBundled: byId<HTMLButtonElement>('load-bundled'),
    pick: byId<HTMLInputElement>('pick'),
    pickGguf: byId<HTMLInputElement>('pick-gguf'),
    modelUrl: byId<HTMLInputElement>('model-url'),
    loadUrl: byId<HTMLButtonElement>('load-url'),
    progress: byId<HTMLProgressElement>('load-progress'),
    status: byId<HTMLElement>('load-status'),
    cancel: byId<HTMLButtonElement>('cancel-load'),
    cached: byId<HTMLUListElement>('cached'),
    clearCache: byId<HTMLButtonElement>('clear-cache'),
    storage: byId<HTMLElement>('storage'),
  };
  private engineModule: Promise<TabEngine> | null = null;
  private engineNow: TabEngine | null = null;
  private loading: AbortController | null = null;
  /** A generation in this tab is running: the model must not change under it. */
  private chatting = false;

  constructor(private readonly hooks: TabPanelHooks) {
    const ui = this.ui;
    ui.loadBundled.addEventListener('click', () => void this.load({ kind: 'bundled' }));
    ui.loadUrl.addEventListener('click', () => {
      const url = ui.modelUrl.value.trim();
      if (!url) {
        hooks.showError('type the URL of a model folder (ending in /) or of a .gguf file, e.g. /engine/served/');
        return;
      }
      const key = hooks.apiKey();
      // The engine sends headers to the page's own origin only.
      void this.load({ kind: 'url', url, ...(key ? { headers: { Authorization: `Bearer ${key}` } } : {}) });
    });
    ui.modelUrl.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') {
        ev.preventDefault();
        ui.loadUrl.click();
      }
    });
    for (const input of [ui.pick, ui.pickGguf]) {
      input.addEventListener('change', () => {
        const files = [...(input.files ?? [])];
        // Cleared, so that picking the same files again is a change too.
        input.value = '';
        if (files.length > 0) void this.load({ kind: 'files', files });
      });
    }
    ui.cancel.addEventListener('click', () => this.loading?.abort());
    ui.clearCache.addEventListener('click', () => void this.deleteCached());
    this.setControls();
  }

  /** The engine, once imported; null before. */
  engine(): TabEngine | null {
    return this.engineNow;
  }

  /** Why the tab cannot chat now (a model is loading), or null. */
  busy(): string | null {
    return this.loading ? 'a model is loading in this tab: wait for it, or cancel it' : null;
  }

  setChatting(on: boolean): void {
    this.chatting = on;
    this.setControls();
  }

  show(on: boolean): void {
    this.ui.panel.hidden = !on;
    if (on) void this.ensureEngine().catch(() => {});
  }

  /** Imports the engine's bundle (once), and shows the adapter and the cache. */
  ensureEngine(): Promise<TabEngine> {
    this.engineModule ??= (async () => {
      this.ui.gpu.textContent = 'WebGPU: loading the engine…';
      let engine: TabEngine;
      try {
        const url = ENGINE_URL;
        const mod = (await import(/* @vite-ignore */ url)) as { engine?: TabEngine };
        if (!mod.engine) throw new Error(`${ENGINE_URL} has no export named engine`);
        engine = mod.engine;
      } catch (err) {
        this.engineModule = null;
        this.ui.gpu.textContent = 'WebGPU: ?';
        const text = `the engine's bundle (${ENGINE_URL}) did not load: ${(err as Error).message}`;
        this.hooks.showError(text);
        throw new Error(text);
      }
      this.engineNow = engine;
      this.setControls();
      engine.adapter().then(
        (name) => void (this.ui.gpu.textContent = `WebGPU: ${name}`),
        (err: unknown) => {
          this.ui.gpu.textContent = 'WebGPU: none';
          this.hooks.showError(`this tab has no WebGPU: ${(err as Error).message}`);
        },
      );
      void this.refreshCache();
      this.hooks.changed();
      return engine;
    })();
    return this.engineModule;
  }

  private setControls(): void {
    const ui = this.ui;
    const locked = this.loading !== null || this.chatting;
    for (const el of [ui.loadBundled, ui.pick, ui.pickGguf, ui.loadUrl, ui.clearCache]) el.disabled = locked;
    for (const b of ui.cached.querySelectorAll('button')) b.disabled = locked;
    ui.cancel.disabled = this.loading === null;
  }

  async load(origin: ModelOrigin): Promise<void> {
    if (this.loading || this.chatting) return;
    const ui = this.ui;
    this.hooks.showError(null);
    let engine: TabEngine;
    try {
      engine = await this.ensureEngine();
    } catch {
      return;
    }
    const abort = new AbortController();
    this.loading = abort;
    this.setControls();
    this.hooks.changed();
    ui.progress.hidden = false;
    ui.progress.removeAttribute('value');
    ui.status.textContent = 'loading…';
    try {
      const loaded = await engine.load(origin, {
        signal: abort.signal,
        onProgress: (p) => {
          if (p.bytesTotal > 0) {
            ui.progress.max = p.bytesTotal;
            ui.progress.value = p.bytesDone;
          }
          ui.status.textContent = progressText(p);
        },
      });
      ui.progress.max = 1;
      ui.progress.value = 1;
      ui.status.textContent = loadedText(loaded);
    } catch (err) {
      ui.progress.hidden = true;
      if (isAbort(err)) {
        ui.status.textContent = engine.loaded() ? `loading cancelled; ${engine.loaded()!.name} stays loaded` : 'loading cancelled: no model loaded';
      } else {
        ui.status.textContent = engine.loaded() ? `${engine.loaded()!.name} stays loaded` : 'no model loaded';
        this.hooks.showError(`the model did not load: ${(err as Error).message}`);
      }
    } finally {
      this.loading = null;
      this.setControls();
      this.hooks.changed();
      void this.refreshCache();
    }
  }

  /** Redraws the cache's list and the storage line. */
  async refreshCache(): Promise<void> {
    const engine = this.engineNow;
    if (!engine) return;
    try {
      const [files, storage] = await Promise.all([engine.cached(), engine.storage()]);
      this.ui.cached.replaceChildren(...files.map((f) => this.cachedItem(f)));
      if (files.length === 0) {
        const li = document.createElement('li');
        li.className = 'muted';
        li.textContent = 'nothing cached';
        this.ui.cached.append(li);
      }
      this.ui.storage.textContent = `storage: ${size(storage.usage)} used of ${size(storage.quota)}; ` +
        (storage.persisted ? 'persisted' : 'not persisted (the browser may evict the cache when space runs low)');
      this.setControls();
    } catch (err) {
      this.hooks.showError(`cannot read the tab's cache: ${(err as Error).message}`);
    }
  }

  private cachedItem(f: CachedFile): HTMLLIElement {
    const li = document.createElement('li');
    li.dataset.key = f.key;
    const name = document.createElement('span');
    name.className = 'url';
    // This server's own files are shown by their path: the origin is the same for all of them.
    name.textContent = f.url.startsWith(`${location.origin}/`) ? f.url.slice(location.origin.length) : f.url;
    name.title = `${f.url}\n${f.key}\nstored ${new Date(f.storedAt).toLocaleString()}`;
    const bytes = document.createElement('span');
    bytes.className = 'muted';
    bytes.textContent = size(f.bytes);
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'delete';
    del.textContent = 'delete';
    del.title = `Delete ${f.url} from this tab's cache`;
    del.addEventListener('click', () => void this.deleteCached(f.key));
    li.append(name, bytes, del);
    return li;
  }

  private async deleteCached(key?: string): Promise<void> {
    const engine = this.engineNow;
    if (!engine) return;
    try {
      await engine.deleteCached(key);
    } catch (err) {
      this.hooks.showError(`cannot delete from the tab's cache: ${(err as Error).message}`);
    }
    await this.refreshCache();
  }
}
