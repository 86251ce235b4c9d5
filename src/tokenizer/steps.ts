/**
 * Tokenizing in steps. Tokenizing a long prompt is pure CPU work (a 130,000-character message
 * takes about a second); a server that ran it on its event loop would answer nothing else
 * meanwhile. So the encoders are written as generators that *ask* for each piece of text to be
 * tokenized (yield an EncodeRequest, get its ids back) and do the cheap bookkeeping themselves.
 * Whoever runs them decides where the tokenizing happens: inline, all at once (`runSteps`: the
 * CLI), or in a worker thread while the event loop goes on (`runStepsAsync`: the server).
 */
export interface EncodeRequest {
  text: string;
  /** Recognize special-token strings in the text (the chat-template path) or not (plain text). */
  parseSpecial: boolean;
}

export type Steps<T> = Generator<EncodeRequest, T, readonly number[]>;

/** Runs the steps through, tokenizing each request with `encode` at once. */
export function runSteps<T>(steps: Steps<T>, encode: (req: EncodeRequest) => readonly number[]): T {
  let r = steps.next();
  while (!r.done) r = steps.next(encode(r.value));
  return r.value;
}

/** Runs the steps with an asynchronous `encode` (a worker); stops with the signal's reason when it aborts. */
export async function runStepsAsync<T>(
  steps: Steps<T>,
  encode: (req: EncodeRequest) => Promise<readonly number[]>,
  signal?: AbortSignal,
): Promise<T> {
  signal?.throwIfAborted();
  let r = steps.next();
  while (!r.done) {
    const ids = await encode(r.value);
    signal?.throwIfAborted();
    r = steps.next(ids);
  }
  return r.value;
}
