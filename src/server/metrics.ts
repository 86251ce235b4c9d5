/**
 * GET /metrics: the server's Prometheus metrics, kept by prom-client in a registry of this
 * server's own (several servers in one process, as in the tests, count apart).
 *
 * Names: where vLLM has a metric for the same thing, its exact name (`vllm:num_requests_running`,
 * `vllm:time_to_first_token_seconds`, ...), with its `model_name` label, so that dashboards,
 * alerts and load-aware routers written against vLLM read this server unchanged; the rest are
 * `openchat:`. Every series carries `model_name` (the served name); per-request series carry
 * `adapter` too (the LoRA adapter's name, "" for the base model). No label holds request text,
 * a key, or a path as sent: endpoints are a fixed set (endpointLabel).
 *
 * Counting rules (each checked by operations.test.ts against the requests sent):
 * - a request's prompt tokens, prefix-cache queries and hits count once when its first choice
 *   ends (n choices share one prompt), so a request refused or cancelled before it reached the
 *   model counts none;
 * - every choice's generated tokens count, a cancelled one's too, and its finish reason
 *   (`stop`, `length`, `abort`) goes to vllm:request_success_total;
 * - time to first token and end-to-end latency run from the request's arrival (before its body
 *   is read or its prompt tokenized), queue time from the request's admission to the moment its
 *   sequence got a KV-cache region;
 * - inter-token latency: a choice's decode time over its tokens after the first, observed once
 *   per interval, so the histogram's _sum and _count (and so its mean) are exact while its
 *   buckets show each choice's mean rather than single gaps.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ChoiceRecord, GenerationObserver } from './generation.ts';
import { isWebPath } from './web.ts';

/** What the metrics read from the server and its generator at each scrape. */
export interface MetricsSources {
  modelName: string;
  adapters: readonly string[];
  contextLength: number;
  /** KV-cache regions in the pool (the most sequences that run at once). */
  kvRegions: number;
  running(): number;
  waiting(): number;
  kvRegionsInUse(): number;
  draining(): boolean;
  apiKeys(): number;
}

// Buckets for this engine's range: from a GPU's milliseconds to a software adapter's minutes.
const LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640];
const TOKEN_GAP_BUCKETS = [0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5, 10];
const E2E_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560];

/** The endpoint a path belongs to, from a fixed set (a label must not carry what a client sent). */
export function endpointLabel(path: string): string {
  if (path === '/v1/chat/completions' || path === '/v1/completions' || path === '/health' || path === '/metrics') return path;
  if (path === '/v1/models' || path.startsWith('/v1/models/')) return '/v1/models';
  if (path.startsWith('/ai/run/')) return '/ai/run';
  if (isWebPath(path)) return 'web';
  return 'other';
}

const METHODS = new Set(['GET', 'POST', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'PATCH']);

export class ServerMetrics implements GenerationObserver {
  readonly registry = new Registry();
  private readonly httpRequests: Counter<'endpoint' | 'method' | 'status'>;
  private readonly aborted: Counter<'endpoint'>;
  private readonly promptTokens: Counter<'adapter'>;
  private readonly generationTokens: Counter<'adapter'>;
  private readonly success: Counter<'adapter' | 'finished_reason'>;
  private readonly prefixQueries: Counter<'adapter'>;
  private readonly prefixHits: Counter<'adapter'>;
  private readonly ttft: Histogram<'adapter'>;
  private readonly itl: Histogram<'adapter'>;
  private readonly e2e: Histogram<'adapter'>;
  private readonly queue: Histogram<'adapter'>;
  private readonly keyReloads: Counter<'result'>;

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    this.registry.setDefaultLabels({ model_name: sources.modelName });
    // The process's own (CPU, memory, event-loop lag, GC): a stalled event loop is a stalled server.
    collectDefaultMetrics({ register: this.registry });

    new Gauge({
      name: 'vllm:num_requests_running',
      help: 'Requests being generated (holding KV-cache regions).',
      registers,
      collect() {
        this.set(sources.running());
      },
    });
    new Gauge({
      name: 'vllm:num_requests_waiting',
      help: 'Requests admitted and waiting for a KV-cache region.',
      registers,
      collect() {
        this.set(sources.waiting());
      },
    });
    new Gauge({
      name: 'vllm:kv_cache_usage_perc',
      help: 'KV-cache use: the fraction of the regions of the pool held by sequences (1 = full).',
      registers,
      collect() {
        this.set(sources.kvRegions > 0 ? sources.kvRegionsInUse() / sources.kvRegions : 0);
      },
    });
    new Gauge({ name: 'openchat:kv_cache_regions', help: 'KV-cache regions in the pool: the most sequences decoded together.', registers }).set(sources.kvRegions);
    new Gauge({
      name: 'openchat:draining',
      help: '1 while the server drains (after SIGTERM): new requests get 503, running ones finish.',
      registers,
      collect() {
        this.set(sources.draining() ? 1 : 0);
      },
    });
    new Gauge({
      name: 'openchat:api_keys',
      help: 'API keys accepted (0: none needed).',
      registers,
      collect() {
        this.set(sources.apiKeys());
      },
    });
    new Gauge({ name: 'openchat:model_info', help: 'The served model (always 1).', labelNames: ['context_length'], registers }).set(
      { context_length: String(sources.contextLength) },
      1,
    );
    const adapters = new Gauge({ name: 'openchat:lora_adapter_info', help: 'A LoRA adapter served beside the model, by its name (always 1).', labelNames: ['adapter'], registers });
    for (const a of sources.adapters) adapters.set({ adapter: a }, 1);

    this.httpRequests = new Counter({
      name: 'openchat:http_requests_total',
      help: 'HTTP requests answered, by endpoint, method and status (499: the client left first).',
      labelNames: ['endpoint', 'method', 'status'],
      registers,
    });
    this.aborted = new Counter({
      name: 'openchat:requests_aborted_total',
      help: 'Requests whose client left before the answer was complete (their generation was cancelled).',
      labelNames: ['endpoint'],
      registers,
    });
    this.promptTokens = new Counter({ name: 'vllm:prompt_tokens_total', help: 'Prompt tokens of the requests that reached the model.', labelNames: ['adapter'], registers });
    this.generationTokens = new Counter({ name: 'vllm:generation_tokens_total', help: 'Tokens generated (every choice, cancelled ones included).', labelNames: ['adapter'], registers });
    this.success = new Counter({
      name: 'vllm:request_success_total',
      help: 'Choices finished, by finish reason (stop, length, abort).',
      labelNames: ['adapter', 'finished_reason'],
      registers,
    });
    this.prefixQueries = new Counter({ name: 'vllm:prefix_cache_queries_total', help: 'Prompt tokens looked up in the KV cache (every prompt token of every request).', labelNames: ['adapter'], registers });
    this.prefixHits = new Counter({
      name: 'vllm:prefix_cache_hits_total',
      help: 'Prompt tokens whose keys were still in the KV cache (earlier turns of a chat) and were not computed again.',
      labelNames: ['adapter'],
      registers,
    });
    this.ttft = new Histogram({ name: 'vllm:time_to_first_token_seconds', help: 'From the arrival of the request to its first token.', labelNames: ['adapter'], buckets: LATENCY_BUCKETS, registers });
    this.itl = new Histogram({
      name: 'vllm:inter_token_latency_seconds',
      help: 'Between the tokens of a choice: its mean gap, once per gap.',
      labelNames: ['adapter'],
      buckets: TOKEN_GAP_BUCKETS,
      registers,
    });
    this.e2e = new Histogram({ name: 'vllm:e2e_request_latency_seconds', help: 'From the arrival of the request to its last byte, for answers sent whole.', labelNames: ['adapter'], buckets: E2E_BUCKETS, registers });
    this.queue = new Histogram({ name: 'vllm:request_queue_time_seconds', help: 'From admission to a KV-cache region.', labelNames: ['adapter'], buckets: LATENCY_BUCKETS, registers });
    this.keyReloads = new Counter({ name: 'openchat:api_key_reloads_total', help: 'Reloads of the API key file (SIGHUP), by result.', labelNames: ['result'], registers });
  }

  /** One answered request (every path, errors included); `cancelled`: the client left first. */
  request(path: string, method: string, status: number, cancelled: boolean): void {
    const endpoint = endpointLabel(path);
    this.httpRequests.inc({ endpoint, method: METHODS.has(method) ? method : 'other', status: String(cancelled ? 499 : status) });
    if (cancelled) this.aborted.inc({ endpoint });
  }

  keyReload(ok: boolean): void {
    this.keyReloads.inc({ result: ok ? 'ok' : 'error' });
  }

  choiceDone(c: ChoiceRecord): void {
    const now = performance.now();
    const adapter = c.adapter ?? '';
    const t = c.timings;
    if (c.first) {
      this.promptTokens.inc({ adapter }, c.usage.prompt_tokens);
      this.prefixQueries.inc({ adapter }, t.promptTokens);
      this.prefixHits.inc({ adapter }, t.reusedTokens);
      // The sequence's own clock, counted back from now: its first token came decodeSeconds ago,
      // and it got its region timeToFirstToken (its prefill) before that.
      const firstTokenAt = now - t.decodeSeconds * 1000;
      const regionAt = firstTokenAt - t.timeToFirstToken * 1000;
      this.queue.observe({ adapter }, Math.max(0, regionAt - c.submittedAt) / 1000);
      if (c.usage.completion_tokens > 0) this.ttft.observe({ adapter }, Math.max(0, firstTokenAt - c.arrivedAt) / 1000);
    }
    this.generationTokens.inc({ adapter }, c.usage.completion_tokens);
    this.success.inc({ adapter, finished_reason: c.finishReason === 'cancelled' ? 'abort' : c.finishReason });
    if (t.decodeTokens > 0) {
      const gap = t.decodeSeconds / t.decodeTokens;
      for (let i = 0; i < t.decodeTokens; i++) this.itl.observe({ adapter }, gap);
    }
  }

  requestDone(arrivedAt: number, adapter: string | undefined): void {
    this.e2e.observe({ adapter: adapter ?? '' }, (performance.now() - arrivedAt) / 1000);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}
