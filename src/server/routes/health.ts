/**
 * GET /health: that the server is up, and how busy. It never needs a key: server.ts answers it
 * before the auth check.
 */
import type { Exchange, ServerParts } from '../exchange.ts';
import { sendJson } from '../http.ts';

export function health(server: ServerParts, ex: Exchange): void {
  const { generator } = server;
  sendJson(ex.res, 200, {
    status: 'ok',
    model: server.names.served,
    active: server.generations.active,
    queued: generator.queued,
    running: generator.running,
    max_batch: generator.maxBatch,
  });
}
