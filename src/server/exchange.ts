/**
 * One request as the route handlers (routes/) see it. The server (server.ts) makes an Exchange
 * for each request after CORS, auth and the path are dealt with; a handler reads the body through
 * it, answers on its response, and counts what it generated in its record for the log line.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FinishReason, Generator } from '../generator.ts';
import type { Generations } from './generation.ts';
import type { ModelNames } from './models.ts';

/** What one request did, for its log line. */
export interface RequestRecord {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens whose keys were still in the KV cache (a chat's earlier turns), not computed again. */
  cachedTokens: number;
  finishReasons: FinishReason[];
  errorCode: string | null;
}

export interface Exchange {
  method: string;
  /** Normalized: no query, no trailing slash, Cloudflare's account paths mapped (server.ts). */
  path: string;
  req: IncomingMessage;
  res: ServerResponse;
  record: RequestRecord;
  /** When the request arrived (performance.now() ms): where its latency metrics start. */
  arrivedAt: number;
  /** Aborts when the client leaves before the answer is complete. */
  signal: AbortSignal;
  /**
   * The body as a JSON object (413 over the size limit, 400 if not an object). A handler reads it
   * only after the checks that need no body, so those answer without waiting for an upload.
   */
  readJson(): Promise<Record<string, unknown>>;
}

/** The server's parts that handlers share: its model, the names it answers to, its generations. */
export interface ServerParts {
  readonly generator: Generator;
  readonly names: ModelNames;
  readonly generations: Generations;
  /** When the server was made (Unix seconds): the `created` of its model objects. */
  readonly created: number;
  /** After SIGTERM (OpenChatServer.drain): running answers finish, new requests are refused. */
  readonly draining: boolean;
}

/** The request was cancelled (the client left); nothing more is sent. */
export class Cancelled extends Error {}
