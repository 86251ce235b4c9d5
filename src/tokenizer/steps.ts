/**
 * Work done in bounded steps. Tokenizing a long prompt is pure CPU work; a
 * server that ran it in one go would answer nothing else meanwhile (a 130,000-
 * character message takes about half a second). So the encoders are written as
 * generators: each `yield` is a point where the work so far is consistent and a
 * caller may let the event loop run. `runSteps` runs them straight through (the
 * CLI), `runStepsAsync` yields to the event loop at every step (the server).
 */
export type Steps<T> = Generator<void, T, void>;

/** Runs every step at once. */
export function runSteps<T>(steps: Steps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/**
 * Runs the steps, letting the event loop run (I/O included: setImmediate runs
 * after the poll phase) between any two. Stops with the signal's reason when it aborts.
 */
export async function runStepsAsync<T>(steps: Steps<T>, signal?: AbortSignal): Promise<T> {
  for (;;) {
    signal?.throwIfAborted();
    const r = steps.next();
    if (r.done) return r.value;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
