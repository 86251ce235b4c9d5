/**
 * The step loop (continuous batching): requests wait in FIFO order for a region of the KV-cache
 * pool, join the running sequences between steps, and leave when they finish or are cancelled.
 * It owns the waiting queue, the active sequences and the free regions, and is the one caller of
 * MistralModel.step; what a step's readout means for each sequence is the Sequence's (sequence.ts).
 */
import type { BatchShape } from './kernels/matmul/index.ts';
import type { ForwardResult, MistralModel, StepSequence } from './model/model.ts';
import type { DeviceLora } from './model/lora.ts';
import type { Sequence } from './sequence.ts';

/**
 * A request's sequences: one, or the n choices of one prompt, admitted together (n regions)
 * so the prompt runs once and its keys are copied to every choice's region.
 */
interface Group {
  members: Sequence[];
  signal?: AbortSignal;
  /** Leaves the waiting queue (abort while waiting). */
  onAbort?: () => void;
}

/**
 * Decode steps run one token of every decoding sequence, and prefill steps, taking turns with
 * them, chunks of the prompts still prefilling (the plan's prefillChunk rows in all), so a long
 * prompt never freezes the streams already running. Each sequence holds a region of the pool
 * while it runs (MistralModel.sequences of them). A sequence's tokens do not depend on what else
 * runs beside it (MistralModel.step), so the same request and seed give the same text alone and
 * under load.
 */
export class Scheduler {
  /** Requests waiting for regions, in arrival order. */
  private readonly waiting: Group[] = [];
  /** Sequences holding a region, in admission order. */
  private active: Sequence[] = [];
  /** Regions not held, least recently used first. */
  private free: number[];
  private looping = false;
  /** The kind of the last step, so that decode and prefill steps alternate while both have work. */
  private lastKind: BatchShape = 'prefill';
  /** Where the next decode step starts among the decoding sequences (round robin past maxChunk of them). */
  private decodeCursor = 0;
  /** Which adapter's sequences the next step serves (round robin over the adapters in use). */
  private adapterTurn = 0;

  constructor(private readonly model: MistralModel) {
    this.free = Array.from({ length: model.sequences }, (_, i) => i);
  }

  /** Requests waiting for the model (for KV-cache regions). */
  get queued(): number {
    return this.waiting.length;
  }

  /** Requests being generated (holding regions). */
  get running(): number {
    return new Set(this.active.map((s) => s.group)).size;
  }

  /** KV-cache regions held (by running sequences, and finished ones until the next step frees them). */
  get regionsHeld(): number {
    return this.model.sequences - this.free.length;
  }

  /** Queues a request; an abort while it waits takes it out of the queue at once. */
  submit(members: Sequence[], signal?: AbortSignal): void {
    const group: Group = { members, signal };
    if (signal?.aborted) {
      for (const m of group.members) m.events.close(signal.reason ?? new Error('aborted'));
      return;
    }
    if (signal) {
      group.onAbort = () => {
        const i = this.waiting.indexOf(group);
        if (i >= 0) {
          this.waiting.splice(i, 1);
          for (const m of group.members) m.events.close(signal.reason ?? new Error('aborted'));
        } else {
          for (const m of group.members) m.cancelled = true;
          this.wake();
        }
      };
      signal.addEventListener('abort', group.onAbort, { once: true });
    }
    this.waiting.push(group);
    this.wake();
  }

  /** Ends a sequence early (its consumer stopped listening); its region is freed at the next step. */
  cancel(seq: Sequence): void {
    if (seq.done) return;
    seq.cancelled = true;
    this.wake();
  }

  /** Starts the step loop unless it runs. */
  private wake(): void {
    if (this.looping) return;
    this.looping = true;
    this.loop().catch((err: unknown) => {
      this.looping = false;
      this.failAll(err);
    });
  }

  /** Steps the model while anything runs or waits: admit, build a step, run it, hand out the readouts. */
  private async loop(): Promise<void> {
    // Let the caller that woke the loop finish its synchronous part (e.g. start iterating).
    await Promise.resolve();
    for (;;) {
      this.retire();
      this.admit();
      const { kind, adapter, batch } = this.buildStep();
      if (batch.length === 0) {
        if (this.active.length === 0 && this.waiting.length === 0) {
          // Cleared here, in the same task as the check: a request submitted after it starts a new loop.
          this.looping = false;
          return;
        }
        throw new Error('scheduler: sequences run but none has a row to step'); // retire() leaves no follower without a leader
      }
      let results: ForwardResult[];
      try {
        results = await this.model.step(
          batch.map((b) => b.step),
          kind,
          adapter,
        );
      } catch (err) {
        // The step's rows are lost: fail its sequences, forget their regions' contents.
        for (const { seq } of batch) {
          this.model.rewindSequence(seq.region, 0);
          seq.done = true;
          seq.events.close(err);
        }
        continue;
      }
      batch.forEach(({ seq }, j) => {
        const out = results[j]!;
        if (seq.done || !('argmax' in out || out.topk || out.logits)) return;
        const followers = this.active.filter((f) => f.follower && f.group === seq.group && !f.done);
        for (const f of followers) {
          // n choices: the prompt ran once; copy its keys and hand each choice its own copy of the readout.
          this.model.copySequence(seq.region, f.region);
          f.follower = false;
          f.reused = seq.reused;
          consume(f, cloneResult(out));
        }
        consume(seq, out);
      });
    }
  }

  /** An error of the scheduler itself: every request gets it (nothing may hang or crash the server). */
  private failAll(err: unknown): void {
    for (const seq of [...this.active, ...this.waiting.flatMap((g) => g.members)]) {
      if (seq.region >= 0) this.model.rewindSequence(seq.region, 0);
      seq.done = true;
      seq.events.close(err);
    }
    this.active = [];
    this.waiting.length = 0;
    this.free = Array.from({ length: this.model.sequences }, (_, i) => i);
  }

  /** Frees the regions of sequences that finished or were cancelled. */
  private retire(): void {
    const keep: Sequence[] = [];
    for (const seq of this.active) {
      if (seq.cancelled && !seq.done) seq.finish('cancelled');
      if (seq.done) this.free.push(seq.region);
      else keep.push(seq);
    }
    this.active = keep;
    // Followers whose leader left before its prompt ran (cancelled, failed) run the prompt themselves.
    for (const f of keep) {
      if (!f.follower || keep.some((o) => o.group === f.group && !o.follower)) continue;
      f.follower = false;
      this.model.rewindSequence(f.region, 0);
      f.admit(f.region, 0);
    }
  }

  /** Admits waiting requests, in order, while regions are free. */
  private admit(): void {
    while (this.waiting.length > 0 && this.free.length >= this.waiting[0]!.members.length) {
      const group = this.waiting.shift()!;
      if (group.signal && group.onAbort) {
        // From here an abort cancels the running sequences.
        group.signal.removeEventListener('abort', group.onAbort);
        const members = group.members;
        group.signal.addEventListener('abort', () => {
          for (const m of members) m.cancelled = true;
          this.wake();
        }, { once: true });
      }
      for (const m of group.members) m.group = group;
      const [leader, ...followers] = group.members;
      // The leader takes the region that keeps most of its prompt (a chat's earlier turns) for the
      // fewest cached tokens thrown away: every chat shares the template's first tokens, so by
      // reuse alone a new conversation would overwrite another's history while empty regions
      // wait. Ties go to the region freed longest ago (the front of the list).
      let best = 0;
      let bestReuse = 0;
      let bestScore = -Infinity;
      this.free.forEach((region, i) => {
        const reuse = this.model.reusablePrefixOf(region, leader!.promptIds, leader!.adapter);
        const score = 2 * reuse - this.model.sequenceLength(region); // reused minus discarded
        if (score > bestScore) {
          best = i;
          bestReuse = reuse;
          bestScore = score;
        }
      });
      const region = this.free.splice(best, 1)[0]!;
      this.model.rewindSequence(region, bestReuse);
      leader!.admit(region, bestReuse);
      this.active.push(leader!);
      for (const f of followers) {
        f.admit(this.free.shift()!, 0);
        f.follower = true;
        f.pending = [];
        this.active.push(f);
      }
    }
  }

  /**
   * The next step, decode or prefill (alternating while both have work, so a long prompt and
   * the running streams take turns): a decode step runs one token of every decoding sequence (of
   * up to maxChunk, round robin beyond that); a prefill step runs prompt chunks of those still
   * prefilling, in admission order, up to maxChunk rows in all. A step runs
   * under one LoRA adapter (or none): with sequences under several, steps take turns among them.
   */
  private buildStep(): { kind: BatchShape; adapter: DeviceLora | undefined; batch: { seq: Sequence; step: StepSequence }[] } {
    const ready = this.active.filter((seq) => !seq.done && !seq.follower);
    const adapters = [...new Set(ready.map((seq) => seq.adapter))];
    const adapter = adapters[this.adapterTurn++ % Math.max(1, adapters.length)];
    const runnable = ready.filter((seq) => seq.adapter === adapter);
    const decoding = runnable.filter((seq) => !seq.prefilling);
    const prefilling = runnable.filter((seq) => seq.prefilling);
    const kind: BatchShape = decoding.length === 0 || (prefilling.length > 0 && this.lastKind === 'decode') ? 'prefill' : 'decode';
    this.lastKind = kind;
    const batch: { seq: Sequence; step: StepSequence }[] = [];
    if (kind === 'decode') {
      const n = Math.min(decoding.length, this.model.maxChunk);
      const first = this.decodeCursor % decoding.length;
      for (let i = 0; i < n; i++) {
        const seq = decoding[(first + i) % decoding.length]!;
        batch.push({ seq, step: { seq: seq.region, ids: seq.pending, readout: seq.readout } });
      }
      this.decodeCursor = first + n;
      return { kind, adapter, batch };
    }
    let budget = this.model.maxChunk;
    for (const seq of prefilling) {
      if (budget <= 0) break;
      const n = Math.min(seq.pending.length, budget);
      const ids = seq.pending.slice(0, n);
      seq.pending = seq.pending.slice(n);
      budget -= n;
      // Only the prompt's last chunk reads anything back: its last row gives the first token.
      batch.push({ seq, step: { seq: seq.region, ids, readout: seq.pending.length === 0 ? seq.readout : { kind: 'none' } } });
    }
    return { kind, adapter, batch };
  }
}

/** Hands a sequence its readout; an error there (sampling, a constraint) ends that sequence alone. */
function consume(seq: Sequence, out: ForwardResult): void {
  try {
    seq.consume(out);
  } catch (err) {
    seq.done = true;
    seq.events.close(err);
  }
}

/** A readout's own copy (sampling may change the logits row in place). */
function cloneResult(r: ForwardResult): ForwardResult {
  return {
    ...(r.argmax !== undefined ? { argmax: r.argmax } : {}),
    ...(r.topk ? { topk: { ids: r.topk.ids.slice(), logits: r.topk.logits.slice(), ...(r.topk.logSumExp !== undefined ? { logSumExp: r.topk.logSumExp } : {}) } } : {}),
    ...(r.logits ? { logits: r.logits.slice() } : {}),
  };
}
