/**
 * `openchat serve`: the HTTP server (src/server) over one loaded Generator, until a signal:
 * TERM drains (new requests get 503, running answers finish, up to --drain-timeout), Ctrl-C
 * (INT), or a second TERM, stops at once; HUP reloads --api-keys-file.
 * Everything that can be wrong with the options (a log file that cannot be opened, a bad number,
 * a missing model folder, a key file without keys) fails here in one line, before the model loads.
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
import { API_KEYS_ENV, ApiKeys, keyFileWarning } from '../../src/server/keys.ts';
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
  apiKeysFile?: string;
  metricsPublic?: boolean;
  drainTimeout: number;
  replicaName?: string;
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

/** --replica-name: a short token, as it goes out in a header. */
function replicaNameOption(value: string): string {
  if (!/^[A-Za-z0-9._:-]{1,64}$/.test(value)) {
    throw new InvalidArgumentError(`--replica-name must be 1-64 letters, digits or . _ : -; got ${JSON.stringify(value.slice(0, 80))}`);
  }
  return value;
}

/** The next INT or TERM. */
function nextSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(signal);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

/** The keys from --api-keys, --api-keys-file and $OPENCHAT_API_KEYS; one line saying what is wrong otherwise. */
function loadKeys(opts: ServeOptions): ApiKeys {
  const warn = (line: string) => process.stderr.write(`openchat serve: ${line}\n`);
  if (opts.apiKeys?.length) {
    warn('--api-keys shows the keys to every user of this machine (in the process list); prefer --api-keys-file FILE or $' + API_KEYS_ENV);
  }
  if (opts.apiKeysFile !== undefined) {
    const w = keyFileWarning(opts.apiKeysFile);
    if (w) warn(w);
  }
  return ApiKeys.load({ keys: opts.apiKeys, file: opts.apiKeysFile, env: process.env[API_KEYS_ENV] });
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
    .option('--api-keys <keys...>', "accept only requests with 'Authorization: Bearer <one of these keys>' (visible in the process list: prefer --api-keys-file or $OPENCHAT_API_KEYS)")
    .option('--api-keys-file <file>', "API keys, one per line ('#' comments); HUP reloads it. $OPENCHAT_API_KEYS (comma-separated) adds more")
    .option('--metrics-public', 'serve GET /metrics without an API key (default: it needs one when keys are set)')
    .option('--drain-timeout <seconds>', 'on TERM, seconds to let running answers finish (new requests get 503) before cancelling them', intOption('--drain-timeout', 0, 3600), 30)
    .option('--replica-name <name>', 'sent as X-Replica on every answer, to tell replicas apart behind a load balancer', replicaNameOption)
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
      const apiKeys = loadKeys(opts);
      const logFile = opts.logFile !== undefined ? openLogFile(opts.logFile) : null;
      try {
        const loaded = await loadGenerator({ model: opts.model, quantize: opts.quantize, slidingWindow: opts.slidingWindow }, contextLength, lora, { maxBatch: opts.maxBatch, kvCacheGb: opts.kvCacheGb });
        const running = await startServer({
          generator: loaded,
          host: opts.host,
          port: opts.port,
          apiKeys,
          metricsPublic: opts.metricsPublic,
          replicaName: opts.replicaName,
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
        // The URL ends the line, so that whatever reads it (a script, cli/run-cli.ts) gets it whole.
        process.stderr.write(
          `openchat serve: ${generator.modelName} (context ${generator.contextLength} tokens), up to ${generator.maxBatch} requests decoded together` +
            `${apiKeys.required ? `, API keys required (${apiKeys.count})` : ''}` +
            `${generator.adapterNames.length ? `, LoRA adapters: ${generator.adapterNames.join(', ')}` : ''}` +
            `${opts.replicaName !== undefined ? `, as replica ${opts.replicaName}` : ''}, on ${running.url}\n`,
        );
        process.stderr.write(`openchat serve: the chat page is ${running.url}/, the engine in a browser tab ${running.url}/engine\n`);
        if (generator.isBundledModel) {
          process.stderr.write('openchat serve: this is the bundled tiny random-weight model; its output is noise (use --model)\n');
        }

        // HUP reloads the key file (only with one: otherwise HUP keeps its usual meaning, the end of
        // the terminal, and stops the server).
        const reloadKeys = () => {
          const file = apiKeys.file!;
          try {
            const n = apiKeys.reload();
            running.server.metrics.keyReload(true);
            process.stderr.write(`openchat serve: HUP: reloaded ${file}: ${n} API key${n === 1 ? '' : 's'}\n`);
            const w = keyFileWarning(file);
            if (w) process.stderr.write(`openchat serve: ${w}\n`);
          } catch (err) {
            running.server.metrics.keyReload(false);
            process.stderr.write(`openchat serve: HUP: ${(err as Error).message}; keeping the ${apiKeys.count} keys loaded before\n`);
          }
        };
        if (apiKeys.file !== undefined) process.on('SIGHUP', reloadKeys);

        // Serve until a signal. TERM (what systemd, Docker and Kubernetes send) drains first;
        // Ctrl-C, or a second signal during the drain, stops at once.
        const signal = await nextSignal();
        if (signal === 'SIGTERM' && opts.drainTimeout > 0) {
          const n = running.server.requestsInFlight;
          process.stderr.write(
            `openchat serve: TERM: draining: new requests get 503 and /health says draining; waiting up to ${opts.drainTimeout} s ` +
              `for the ${n} request${n === 1 ? '' : 's'} in flight (TERM or Ctrl-C again stops now)\n`,
          );
          const again = nextSignal();
          const left = await Promise.race([running.drain(opts.drainTimeout * 1000), again.then(() => null)]);
          process.stderr.write(
            left === null
              ? 'openchat serve: stopping now: cancelling what is still running\n'
              : left === 0
                ? 'openchat serve: drained: every request finished\n'
                : `openchat serve: drain timeout: cancelling the ${left} request${left === 1 ? '' : 's'} still in flight\n`,
          );
        }
        process.stderr.write('openchat serve: shutting down\n');
        process.off('SIGHUP', reloadKeys);
        await running.close();
        loaded.close();
      } finally {
        logFile?.close();
      }
    });
}
