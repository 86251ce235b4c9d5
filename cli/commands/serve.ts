/**
 * `openchat serve`: the HTTP server (src/server) over one loaded Generator, until Ctrl-C or TERM.
 * Everything that can be wrong with the options (a log file that cannot be opened, a bad number,
 * a missing model folder) fails here in one line, before the model loads.
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import {
  DEFAULT_HOST,
  DEFAULT_MAX_BODY_BYTES,
  DEFAULT_MAX_QUEUE,
  DEFAULT_PORT,
  DEFAULT_REQUEST_TIMEOUT_MS,
  startServer,
} from '../../src/server/server.ts';
import { openLogFile } from '../../src/server/log.ts';
import { ModelNames } from '../../src/server/models.ts';
import { modelNameOf, resolveModelDir } from '../../src/generator.ts';
import { intOption, MODEL_HELP } from './options.ts';
import { DEFAULT_KV_CACHE_GB, DEFAULT_MAX_BATCH } from '../../src/generator.ts';
import { addContextOption, contextFromFlags, loadGenerator, type ContextFlags } from './sampling-options.ts';

interface ServeOptions extends ContextFlags {
  model?: string;
  host: string;
  port: number;
  apiKeys?: string[];
  disableLogRequests?: boolean;
  logFile?: string;
  maxQueue: number;
  maxBatch: number;
  kvCacheGb: number;
  maxBodyBytes: number;
  corsOrigins?: string[];
  requestTimeout: number;
  lora?: string[];
}

/** `--lora NAME=DIR`: an adapter folder and the model name requests use for it. */
function parseLoraSpec(spec: string): { name: string; dir: string } {
  const eq = spec.indexOf('=');
  if (eq <= 0 || eq === spec.length - 1) {
    throw new Error(`--lora takes NAME=DIR (the model name requests use, and a PEFT adapter folder); got ${JSON.stringify(spec)}`);
  }
  return { name: spec.slice(0, eq), dir: spec.slice(eq + 1) };
}

/** --kv-cache-gb: a positive number of GiB. */
function gibOption(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0 || n > 1024) {
    throw new InvalidArgumentError(`--kv-cache-gb must be a number of GiB in (0, 1024]; got ${JSON.stringify(value)}`);
  }
  return n;
}

export function registerServe(program: Command): void {
  const cmd = program
    .command('serve')
    .description('serve the model over HTTP: OpenAI-compatible /v1 endpoints and the Workers AI schema')
    .option('--model <path>', MODEL_HELP)
    .option('--host <host>', 'address to listen on', DEFAULT_HOST)
    .option('--port <port>', 'port to listen on', intOption('--port', 0, 65535), DEFAULT_PORT)
    .option('--api-keys <keys...>', "accept only requests with 'Authorization: Bearer <one of these keys>'")
    .option('--disable-log-requests', 'do not log a line per request')
    .option('--log-file <file>', 'append the log here instead of stderr');
  addContextOption(cmd);
  cmd
    .option('--max-batch <n>', 'most requests decoded together (continuous batching)', intOption('--max-batch', 1, 256), DEFAULT_MAX_BATCH)
    .option('--kv-cache-gb <gib>', 'device memory for the KV cache; fewer requests run together when --max-batch would not fit', gibOption, DEFAULT_KV_CACHE_GB)
    .option('--max-queue <n>', 'requests that may wait beyond those running before 503', intOption('--max-queue', 0, 1 << 16), DEFAULT_MAX_QUEUE)
    .option('--lora <name=dir...>', 'LoRA adapters (PEFT folders) to serve beside the model, each under its own model name (repeatable)')
    .option('--max-body-bytes <n>', 'largest request body accepted (413 above)', intOption('--max-body-bytes', 1024, 1 << 30), DEFAULT_MAX_BODY_BYTES)
    .option('--cors-origins <origins...>', "browser origins allowed to call the API cross-site, e.g. https://app.example.com ('*': any); default none")
    .addOption(
      new Option('--request-timeout <seconds>', 'seconds a client has to send a whole request, headers and body (408 after)')
        .argParser(intOption('--request-timeout', 1, 3600))
        .default(DEFAULT_REQUEST_TIMEOUT_MS / 1000),
    )
    .action(async (opts: ServeOptions) => {
      const contextLength = contextFromFlags(opts);
      const lora = (opts.lora ?? []).map(parseLoraSpec);
      // Adapter names that clash with the model's own names fail now, not after the weights load.
      new ModelNames(modelNameOf(resolveModelDir(opts.model)), [], lora.map((l) => l.name));
      const logFile = opts.logFile !== undefined ? openLogFile(opts.logFile) : null;
      try {
        const loaded = await loadGenerator({ model: opts.model, quantize: opts.quantize, slidingWindow: opts.slidingWindow }, contextLength, lora, { maxBatch: opts.maxBatch, kvCacheGb: opts.kvCacheGb });
        const running = await startServer({
          generator: loaded,
          host: opts.host,
          port: opts.port,
          apiKeys: opts.apiKeys,
          logRequests: !opts.disableLogRequests,
          log: logFile ? (line) => logFile.log(line) : undefined,
          maxQueue: opts.maxQueue,
          maxBodyBytes: opts.maxBodyBytes,
          corsOrigins: opts.corsOrigins,
          requestTimeoutMs: opts.requestTimeout * 1000,
        }).catch((err: unknown) => {
          loaded.close();
          throw err;
        });
        const { generator } = running;
        process.stderr.write(
          `openchat serve: ${generator.modelName} (context ${generator.contextLength} tokens), up to ${generator.maxBatch} requests decoded together, on ${running.url}` +
            `${opts.apiKeys?.length ? ', API keys required' : ''}` +
            `${generator.adapterNames.length ? `; LoRA adapters: ${generator.adapterNames.join(', ')}` : ''}\n`,
        );
        process.stderr.write(`openchat serve: the chat page is ${running.url}/, the engine in a browser tab ${running.url}/engine\n`);
        if (generator.isBundledModel) {
          process.stderr.write('openchat serve: this is the bundled tiny random-weight model; its output is noise (use --model)\n');
        }

        // Serve until Ctrl-C or a TERM, then stop cleanly: cancel what runs, free the model.
        await new Promise<void>((resolve) => {
          process.once('SIGINT', resolve);
          process.once('SIGTERM', resolve);
        });
        process.stderr.write('openchat serve: shutting down\n');
        await running.close();
        loaded.close();
      } finally {
        logFile?.close();
      }
    });
}
