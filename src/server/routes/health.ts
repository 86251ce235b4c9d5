/**
 * GET /health: that the server is up, and how busy. It never needs a key: server.ts answers it
 * before the auth check. While the server drains (after SIGTERM) it answers 503 `draining`, so
 * that a load balancer's health check takes the replica out before it goes away.
 */
import type { Exchange, ServerParts } from '../exchange.ts';
import { sendJson } from '../http.ts';

export function health(server: ServerParts, ex: Exchange): void {
  const { generator } = server;
  sendJson(
    ex.res,
    server.draining ? 503 : 200,
    {
      status: server.draining ? 'draining' : 'ok',
      model: server.names.served,
      active: server.generations.active,
      queued: generator.queued,
      running: generator.running,
      max_batch: generator.maxBatch,
    },
    server.draining ? { Connection: 'close' } : {},
  );
}
