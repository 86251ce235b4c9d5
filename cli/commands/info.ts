import type { Command } from 'commander';
import { formatReport, getGpu } from '../../src/gpu/device.ts';

export function registerInfo(program: Command): void {
  program
    .command('info')
    .description('print the WebGPU adapter, its features and the limits that matter')
    .option('--json', 'print as JSON')
    .action(async (opts: { json?: boolean }) => {
      const gpu = await getGpu();
      process.stdout.write((opts.json ? JSON.stringify(gpu.report, null, 2) : formatReport(gpu.report)) + '\n');
    });
}
