/**
 * The command line: a thin shell over the library. Each command lives in
 * cli/commands/ and registers itself on the program here.
 */
import { Command, CommanderError } from 'commander';
import { releaseGpu } from '../src/gpu/device.ts';
import { registerInfo } from './commands/info.ts';
import { registerTokenize } from './commands/tokenize.ts';
import { registerGenerate } from './commands/generate.ts';
import { registerChat } from './commands/chat.ts';
import { registerLogits } from './commands/logits.ts';
import { registerBench } from './commands/bench.ts';
import { registerServe } from './commands/serve.ts';
import { registerQuantize } from './commands/quantize.ts';

const program = new Command();
program
  .name('openchat')
  .description('OpenChat 3.5 / Mistral-7B on WebGPU (WGSL kernels, Dawn in Node.js)')
  .exitOverride()
  // Commander's own errors (unknown option, invalid value) in the same one-line form as ours.
  .configureOutput({ outputError: (text, write) => write(`openchat: ${text.replace(/^error: /, '')}`) });

registerInfo(program);
registerTokenize(program);
registerGenerate(program);
registerChat(program);
registerLogits(program);
registerBench(program);
registerServe(program);
registerQuantize(program);

// Commander prints its own parse errors before throwing; an error thrown from
// inside a command's action (even a CommanderError) has not been printed yet.
let inAction = false;
program.hook('preAction', () => {
  inAction = true;
});

/** One clear line on stderr and a non-zero exit code; the stack only with OPENCHAT_DEBUG=1. */
function fail(err: unknown): never {
  const msg = err instanceof Error ? err.message : String(err);
  process.stderr.write(`openchat: ${msg}\n`);
  if (process.env.OPENCHAT_DEBUG && err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
  process.exit(1);
}

try {
  await program.parseAsync(process.argv);
  // Dawn keeps the event loop alive while a device exists: release it and leave deliberately.
  await releaseGpu();
  process.exit(process.exitCode ?? 0);
} catch (err) {
  if (err instanceof CommanderError && !inAction) process.exit(err.exitCode);
  fail(err);
}
