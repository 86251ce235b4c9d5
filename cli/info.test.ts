/**
 * `openchat info --kernels` as a user runs it: the real CLI as a child process on this machine's
 * adapter, with the kernel plan forced through OPENCHAT_KERNELS.
 */
import { describe, expect, it } from 'vitest';
import { runCli } from './run-cli.ts';

/** Runs `openchat info --kernels` with OPENCHAT_KERNELS set to `kernels` (unset for undefined). */
async function infoKernels(kernels: string | undefined): Promise<string> {
  const before = process.env.OPENCHAT_KERNELS;
  if (kernels === undefined) delete process.env.OPENCHAT_KERNELS;
  else process.env.OPENCHAT_KERNELS = kernels;
  try {
    const r = await runCli(['info', '--kernels']);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout;
  } finally {
    if (before === undefined) delete process.env.OPENCHAT_KERNELS;
    else process.env.OPENCHAT_KERNELS = before;
  }
}

/** The first kernel line under the attention section's shape label holding `shape`. */
function attentionKernel(out: string, shape: string): string {
  const lines = out.slice(out.indexOf('\nattention, ')).split('\n');
  return lines[lines.findIndex((l) => l.startsWith('  ') && !l.startsWith('   ') && l.includes(shape)) + 1]!.trim();
}

describe('openchat info --kernels', () => {
  it('prints the plan\'s kernels per shape class, and OPENCHAT_KERNELS moves attention to split.wgsl and flash.wgsl', async () => {
    const forced = await infoKernels('attention=split,prefillAttention=flash');
    expect(forced).toContain('kernel plan:  ');
    expect(forced).toContain('(OPENCHAT_KERNELS=attention=split,prefillAttention=flash)');
    expect(forced).toMatch(/\nmatmul \(.*\), f32\/f16\/bf16 weights\n {2}decode step: 1 row\n {6}matmul\/\S+\.wgsl @main .*MATRICES=1/);
    expect(forced).toMatch(/includes matmul\/params\.wgsl, matmul\/sums\.wgsl, weights\.wgsl, matmul\/products\.wgsl/);
    expect(attentionKernel(forced, '1 decode token')).toMatch(/^attention\/split\.wgsl @main @reduce/);
    expect(attentionKernel(forced, 'prefill chunk')).toMatch(/^attention\/flash\.wgsl @main/);
    const plain = await infoKernels('attention=tiled,prefillAttention=tiled');
    expect(attentionKernel(plain, '1 decode token')).toMatch(/^attention\/tiled\.wgsl @main/);
    expect(attentionKernel(plain, 'prefill chunk')).toMatch(/^attention\/tiled\.wgsl @main/);
  });
});
