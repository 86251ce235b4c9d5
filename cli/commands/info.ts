import type { Command } from 'commander';
import { formatReport, formatSubgroupMatrixProbe, getGpu, probeSubgroupMatrix } from '../../src/gpu/device.ts';
import { formatProfile } from '../../src/gpu/profile.ts';
import { formatPlan, resolvePlan } from '../../src/kernels/plan.ts';
import { describeKernels } from '../../src/kernels/table.ts';

export function registerInfo(program: Command): void {
  program
    .command('info')
    .description('print the WebGPU adapter, its features, the limits that matter, and the kernel plan a model would run')
    .option('--json', 'print as JSON')
    .option('--kernels', 'also print, for each operation and shape class, the WGSL kernel the plan runs (file, entry points, tiles, includes)')
    .option('--subgroup-matrix', "also ask whether the adapter offers subgroup matrices (tensor cores from WGSL) with Dawn's unsafe toggles set")
    .action(async (opts: { json?: boolean; kernels?: boolean; subgroupMatrix?: boolean }) => {
      const gpu = await getGpu();
      const probe = opts.subgroupMatrix ? await probeSubgroupMatrix() : null;
      const plan = resolvePlan(gpu.profile);
      const kernels = opts.kernels ? describeKernels(plan, gpu.profile) : null;
      const forced = process.env.OPENCHAT_KERNELS ? ` (OPENCHAT_KERNELS=${process.env.OPENCHAT_KERNELS})` : '';
      process.stdout.write(
        (opts.json
          ? JSON.stringify({ ...gpu.report, profile: gpu.profile, plan, ...(probe ? { subgroupMatrix: probe } : {}), ...(kernels ? { kernels } : {}) }, null, 2)
          : `${formatReport(gpu.report)}\nprofile:      ${formatProfile(gpu.profile)}\nkernel plan:  ${formatPlan(plan)}${forced}` +
            (probe ? `\n${formatSubgroupMatrixProbe(probe)}` : '') +
            (kernels ? `\n\n${kernels.join('\n')}` : '')) + '\n',
      );
    });
}
