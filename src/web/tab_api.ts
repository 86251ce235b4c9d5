/**
 * What the engine in a tab offers the chat page: the contract between the page (src/server/web/,
 * which talks to the server or to this) and the engine module (src/web/engine.ts, bundled as
 * /web/engine.js and imported by the page only when the user picks "this tab", so a page that
 * talks to the server never downloads the engine).
 *
 * Types only: the page imports them with `import type`, so no engine code enters its bundle.
 */

/** Where a model comes from. */
export type ModelOrigin =
  /** The bundled tiny model, served by `openchat serve` at /engine/model/. */
  | { kind: 'bundled' }
  /** The model the server serves (`/engine/served/`: its --model folder or GGUF file), or any folder URL ending in `/`, or a `.gguf` file's URL. */
  | {
      kind: 'url';
      url: string;
      /** Sent with every request for the model's files when the URL is the page's own origin (the server's API key, for /engine/served/ behind keys). */
      headers?: Record<string, string>;
    }
  /** Files the user picked: a folder (webkitdirectory: config.json, *.safetensors, tokenizer.json) or one GGUF file. */
  | { kind: 'files'; files: File[] };

export interface LoadProgress {
  /** Weight bytes read so far (from the network, the cache or the picked files), and in all. */
  bytesDone: number;
  bytesTotal: number;
  /** Read rate over the load so far. */
  bytesPerSecond: number;
  /** Bytes of bytesDone that came from the tab's cache rather than the network or the picked files. */
  bytesFromCache: number;
  tensorsDone: number;
  tensorsTotal: number;
}

export interface LoadedModel {
  /** The model's name (its folder's or file's). */
  name: string;
  /** Bytes of weights read. */
  bytes: number;
  /** Bytes of those that came from the cache. */
  bytesFromCache: number;
  seconds: number;
  /** Positions the tab's KV cache holds. */
  contextLength: number;
}

/** One entry of the tab's weight cache (origin-private storage). */
export interface CachedFile {
  /** What identifies it: its URL, size and ETag. */
  key: string;
  url: string;
  bytes: number;
  etag: string;
  /** When it was stored (ms since the epoch). */
  storedAt: number;
}

export interface StorageReport {
  /** navigator.storage.estimate(): bytes this origin uses, and may use. */
  usage: number;
  quota: number;
  /** Whether navigator.storage.persist() was granted (the browser will not evict the cache under pressure). */
  persisted: boolean;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface ChatParams {
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  seed?: number;
  /** OpenChat's condition ('GPT4 Correct' or 'Code'). */
  condition?: string;
}

/** A streamed answer, the same events whichever backend gives it. */
export type ChatEvent =
  | { type: 'text'; text: string }
  | {
      type: 'done';
      finishReason: string;
      usage: { prompt_tokens: number; completion_tokens: number };
      /** Milliseconds from the request to its first token. */
      timeToFirstTokenMs: number;
      /** Completion tokens after the first, per second of decoding. */
      decodeTokensPerSecond: number;
    };

export interface TabEngine {
  /** The tab's WebGPU adapter, in words ("SwiftShader (software)"); rejects when the tab has no WebGPU. */
  adapter(): Promise<string>;
  /** Loads a model, replacing the one loaded; rejects with an Error whose message says what went wrong (AbortError when `signal` aborts). */
  load(origin: ModelOrigin, opts?: { onProgress?: (p: LoadProgress) => void; signal?: AbortSignal }): Promise<LoadedModel>;
  /** The loaded model, or null. */
  loaded(): LoadedModel | null;
  /** Streams an answer from the loaded model; `signal` stops it (the done event then says finishReason 'cancelled'). */
  chat(messages: ChatMessage[], params: ChatParams, signal?: AbortSignal): AsyncIterable<ChatEvent>;
  /** The cache's files, and deleting one (or all, with no key). */
  cached(): Promise<CachedFile[]>;
  deleteCached(key?: string): Promise<void>;
  storage(): Promise<StorageReport>;
}
