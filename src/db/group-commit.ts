/**
 * Group commit: concurrent callers' work shares one transaction (and one WAL flush), and each caller
 * is answered only after that transaction commits, so batching never weakens durability.
 *
 * Batches form by themselves: a submission starts a transaction at once when a batch slot is free (no
 * added latency when the service is quiet). A batch takes its items only once its transaction has
 * begun (a connection is held): everything queued by then, up to `maxBatch`, goes in, so the time
 * spent waiting for a connection or for the previous batch is what gathers the next batch. Two items with the same key never share a batch (they would touch
 * the same rows twice); the later one waits for the next batch, in arrival order.
 *
 * If a batch fails, its transaction rolled back and nothing of it was written: each item is then run
 * again alone, so one bad item fails only its own caller.
 */

export interface GroupCommitOptions<T> {
  /** Most items in one batch; 1 turns batching off. */
  readonly maxBatch: number;
  /** Batches in flight at once (each holds one database connection). */
  readonly concurrency: number;
  /** Items with equal keys are never in the same batch. */
  keyOf(item: T): string;
  /** Told the size of every batch that committed (metrics). */
  onBatch?(size: number): void;
}

interface Queued<T, R> {
  readonly item: T;
  readonly key: string;
  readonly resolve: (result: R) => void;
  readonly reject: (error: unknown) => void;
}

/** Runs `work` in one transaction: commits when it resolves, rolls back when it throws. */
export type Transact<Tx> = <X>(work: (tx: Tx) => Promise<X>) => Promise<X>;

export class GroupCommit<T, R, Tx> {
  private queue: Queued<T, R>[] = [];
  private active = 0;
  /** Batches started whose transaction has not begun yet: each will take everything queued. */
  private waiting = 0;

  /** `apply` does a batch's work in the given transaction and returns one result per item, in order. */
  constructor(
    private readonly transact: Transact<Tx>,
    private readonly apply: (tx: Tx, items: readonly T[]) => Promise<readonly R[]>,
    private readonly options: GroupCommitOptions<T>,
  ) {}

  submit(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, key: this.options.keyOf(item), resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    // One batch waiting to begin is enough: it takes whatever arrives meanwhile.
    while (this.active < this.options.concurrency && this.queue.length > 0 && this.waiting === 0) {
      this.active++;
      this.waiting++;
      void this.execute().finally(() => {
        this.active--;
        this.pump();
      });
    }
  }

  /** The oldest queued items with distinct keys, up to maxBatch; the rest keep their order. */
  private take(): Queued<T, R>[] {
    const batch: Queued<T, R>[] = [];
    const rest: Queued<T, R>[] = [];
    const keys = new Set<string>();
    for (const queued of this.queue) {
      if (batch.length < this.options.maxBatch && !keys.has(queued.key)) {
        keys.add(queued.key);
        batch.push(queued);
      } else {
        rest.push(queued);
      }
    }
    this.queue = rest;
    return batch;
  }

  private async execute(): Promise<void> {
    let batch: readonly Queued<T, R>[] = [];
    let began = false;
    const begin = () => {
      if (began) return;
      began = true;
      this.waiting--;
      batch = this.take();
      // What this batch could not take (maxBatch, repeated keys) may start another one.
      this.pump();
    };
    try {
      const results = await this.transact((tx) => {
        begin();
        return batch.length === 0
          ? Promise.resolve([])
          : this.apply(
              tx,
              batch.map((q) => q.item),
            );
      });
      if (batch.length === 0) return;
      this.options.onBatch?.(batch.length);
      batch.forEach((q, i) => q.resolve(results[i] as R));
    } catch (error) {
      begin(); // the transaction failed to begin: its items are handled here
      if (batch.length === 1) {
        batch[0]?.reject(error);
        return;
      }
      // Nothing of the batch was written: isolate the failure by running each item alone.
      for (const q of batch) {
        try {
          const [result] = await this.transact((tx) => this.apply(tx, [q.item]));
          this.options.onBatch?.(1);
          q.resolve(result as R);
        } catch (alone) {
          q.reject(alone);
        }
      }
    }
  }
}
