/** The loading progress line the commands show on a terminal: tensors, bytes, seconds. */
import type { LoadProgress } from '../../src/model/model.ts';

export interface ProgressLine {
  onProgress?: (p: LoadProgress) => void;
  /** Ends the line (if one was drawn). */
  done(): void;
}

/** A progress line on stderr while `modelDir` loads; nothing when stderr is not a terminal. */
export function loadProgress(modelDir: string, show = process.stderr.isTTY === true): ProgressLine {
  if (!show) return { done: () => {} };
  let drawn = false;
  let last = 0;
  return {
    onProgress: (p) => {
      const now = performance.now();
      // Redraw at most ten times a second, and always for the last tensor.
      if (now - last < 100 && p.tensorsDone < p.tensorsTotal) return;
      last = now;
      drawn = true;
      process.stderr.write(
        `\rloading ${modelDir}: ${p.tensorsDone}/${p.tensorsTotal} tensors, ` +
          `${(p.bytesDone / 1e9).toFixed(2)} of ${(p.bytesTotal / 1e9).toFixed(2)} GB, ${p.seconds.toFixed(1)} s`,
      );
    },
    done: () => {
      if (drawn) process.stderr.write('\n');
    },
  };
}
