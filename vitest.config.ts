import { defineConfig } from 'vitest/config';

// All test files share one process and one module graph: the WebGPU device and
// its compiled pipelines are created once (a lavapipe pipeline costs seconds to
// compile), and `--expose-gc` lets the device test force garbage collections.
export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'cli/**/*.test.ts', 'golden/**/*.test.ts', 'bench/**/*.test.ts'],
    pool: 'forks',
    isolate: false,
    fileParallelism: false,
    execArgv: ['--expose-gc'],
    reporters: ['default', ['json', { outputFile: '.cache/vitest.json' }]],
    testTimeout: 120_000,
    hookTimeout: 300_000,
  },
});
