import { createWriteStream } from 'node:fs';
import { basename, resolve } from 'node:path';
import type { Command } from 'commander';
import { DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_QUEUE, DEFAULT_PORT, startServer } from '../../src/server/server.ts';
import { intOption } from './options.ts';
import { loadProgress } from './progress.ts';
import { BUNDLED_MODEL_DIR, Generator } from '../../src/generator.ts';
import { ModelNames } from '../../src/server/models.ts';

interface ServeOptions {
  model?: string;
  host: string;
  port: number;
  apiKeys?: string[];
  disableLogRequests?: boolean;
  logFile?: string;
  contextLength?: number;
  maxQueue: number;
  maxBodyBytes: number;
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

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('serve the model over HTTP: OpenAI-compatible /v1 endpoints and the Workers AI schema')
    .option('--model <dir>', 'Hugging Face model folder (default: $OPENCHAT_MODEL, then the bundled tiny model)')
    .option('--host <host>', 'address to listen on', DEFAULT_HOST)
    .option('--port <port>', 'port to listen on', intOption('--port', 0, 65535), DEFAULT_PORT)
    .option('--api-keys <keys...>', "accept only requests with 'Authorization: Bearer <one of these keys>'")
    .option('--disable-log-requests', 'do not log a line per request')
    .option('--log-file <file>', 'append the log here instead of stderr')
    .option('--context-length <tokens>', 'tokens of context to allocate (default: the model\'s maximum)', intOption('--context-length', 2, 1 << 20))
    .option('--max-queue <n>', 'requests that may wait behind the running one before 503', intOption('--max-queue', 0, 1 << 16), DEFAULT_MAX_QUEUE)
    .option('--lora <name=dir...>', 'LoRA adapters (PEFT folders) to serve beside the model, each under its own model name (repeatable)')
    .option('--max-body-bytes <n>', 'largest request body accepted (413 above)', intOption('--max-body-bytes', 1024, 1 << 30), DEFAULT_MAX_BODY_BYTES)
    .action(async (opts: ServeOptions) => {
      const file = opts.logFile ? createWriteStream(opts.logFile, { flags: 'a' }) : null;
      const log = (line: string) => (file ? file.write(line + '\n') : process.stderr.write(line + '\n'));
      const modelDir = resolve(opts.model || process.env.OPENCHAT_MODEL || BUNDLED_MODEL_DIR);
      const lora = (opts.lora ?? []).map(parseLoraSpec);
      // Adapter names that clash with the model's own names fail now, not after the weights load.
      new ModelNames(basename(modelDir), [], lora.map((l) => l.name));
      const progress = loadProgress(modelDir, process.stderr.isTTY === true && modelDir !== BUNDLED_MODEL_DIR);
      const loaded = await Generator.load({ modelDir, contextLength: opts.contextLength, lora, onProgress: progress.onProgress });
      progress.done();
      const running = await startServer({
        generator: loaded,
        host: opts.host,
        port: opts.port,
        apiKeys: opts.apiKeys,
        logRequests: !opts.disableLogRequests,
        log,
        maxQueue: opts.maxQueue,
        maxBodyBytes: opts.maxBodyBytes,
      });
      const { generator } = running;
      process.stderr.write(
        `openchat serve: ${generator.modelName} (context ${generator.contextLength} tokens) on ${running.url}` +
          `${opts.apiKeys?.length ? ', API keys required' : ''}` +
          `${generator.adapterNames.length ? `; LoRA adapters: ${generator.adapterNames.join(', ')}` : ''}\n`,
      );
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
      if (file) await new Promise<void>((resolve) => file.end(resolve));
    });
}
