/**
 * Coalesces concurrent reads into one query: the read-side sibling of group commit. A load starts a
 * query at once while fewer than `concurrency` are in flight (no added latency when the service is
 * quiet); otherwise it waits, and the next query to start takes every waiting load, up to `maxBatch`.
 * So under load, N concurrent lookups cost one round trip and one statement instead of N.
 *
 * Only for reads outside a transaction, whose answer does not depend on which other reads share the
 * statement: each load gets exactly what its own query would have returned at that moment.
 */
export interface ReadBatcherOptions {
  /** Queries in flight at once (each holds one pooled connection). */
  readonly concurrency: number;
  /** Most loads answered by one query. */
  readonly maxBatch: number;
}

interface Waiting<K, R> {
  readonly key: K;
  readonly resolve: (result: R) => void;
  readonly reject: (error: unknown) => void;
}

export class ReadBatcher<K, R> {
  private queue: Waiting<K, R>[] = [];
  private inFlight = 0;

  /** `run` answers a batch: one result per key, in order. */
  constructor(
    private readonly run: (keys: readonly K[]) => Promise<readonly R[]>,
    private readonly options: ReadBatcherOptions,
  ) {}

  load(key: K): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ key, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.options.concurrency && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.options.maxBatch);
      this.inFlight++;
      void this.execute(batch).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private async execute(batch: readonly Waiting<K, R>[]): Promise<void> {
    try {
      const results = await this.run(batch.map((w) => w.key));
      if (results.length !== batch.length) throw new Error('a read batch answered the wrong number of keys');
      batch.forEach((w, i) => w.resolve(results[i] as R));
    } catch (error) {
      batch.forEach((w) => w.reject(error));
    }
  }
}
