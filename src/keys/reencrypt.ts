/**
 * The online re-encryption backfill: moves every row of every field set of a purpose to the active
 * key version, while the service keeps serving.
 *
 * - Batches are read in row-key order after a cursor, transformed here, and written set-based with
 *   compare-and-set on the old version (see field-sets.ts), each batch in one transaction together
 *   with its progress row (`reencrypt_progress`): a crash or Ctrl-C loses at most the batches in
 *   flight, and a rerun resumes from the stored cursor.
 * - `lanes` batches are in flight at once (PostgreSQL; one on the single-connection PGlite): while one
 *   lane's update runs in the database, another reads and transforms the next batch, which uses both
 *   cores of a small machine.
 * - A pass that reaches the end is followed by a count; passes repeat until no row outside the failure
 *   list remains under an older version. Since the database refuses rows under a version that is no
 *   longer writable (migration 20261206000700), none can appear under an older version after the
 *   activation committed: the repeat (and the `propagationMs` wait before the last count) is a safety
 *   net. Every batch writes only the active version; a batch whose target stopped being active
 *   (another rotation meanwhile) is refused by the database and the run stops with
 *   KEY_OPERATION_INVALID ("run keys reencrypt again"), exit 1; a rerun moves the rest to the new version.
 * - A row that cannot be moved (its value does not decrypt, its key is gone) is recorded with a code
 *   in `reencrypt_failures` and reported; the run then exits non-zero. Never its value.
 */
import type { Knex } from 'knex';
import { appendAuditEvent } from '../audit/audit-log.js';
import { AppError } from '../errors/app-error.js';
import { fieldSetsFor, type EncryptedFieldSet, type RowFailure } from './field-sets.js';
import { isKeyVersionNotWritable, type KeyActor, type KeyPurpose, type KeyRing } from './key-ring.js';
import { activatedAt } from './key-version-store.js';
import {
  advanceProgress,
  countFailures,
  finishProgress,
  listFailures,
  recordFailures,
  rewindProgress,
  startProgress,
  type ProgressKey,
} from './reencrypt-store.js';

export interface ReencryptOptions {
  readonly purpose: KeyPurpose;
  readonly registry: readonly EncryptedFieldSet[];
  readonly batchSize: number;
  /** Batches in flight at once. 1 on PGlite. */
  readonly lanes: number;
  /** Throttle for busy production databases; undefined: as fast as possible. */
  readonly maxRowsPerSecond?: number | undefined;
  /** How long after an activation every instance is certain to have reloaded its key ring. */
  readonly propagationMs: number;
  readonly actor: KeyActor;
  readonly onProgress?: (progress: ReencryptProgress) => void;
  /** Checked between batches: true stops the run cleanly (Ctrl-C), resumable later. */
  readonly shouldStop?: () => boolean;
}

export interface ReencryptProgress {
  readonly fieldSet: string;
  readonly rowsDone: number;
  readonly rowsTotal: number;
  readonly rowsPerSecond: number;
  readonly etaSeconds: number | undefined;
}

export interface FieldSetOutcome {
  readonly fieldSet: string;
  readonly moved: number;
  readonly passes: number;
  readonly remaining: number;
  readonly failures: readonly RowFailure[];
  readonly resumedFrom: string | undefined;
}

export interface ReencryptResult {
  readonly purpose: KeyPurpose;
  readonly targetVersion: number;
  readonly fieldSets: readonly FieldSetOutcome[];
  readonly stopped: boolean;
  readonly seconds: number;
  readonly ok: boolean;
}

const MAX_PASSES = 20;

export async function reencrypt(knex: Knex, ring: KeyRing, options: ReencryptOptions): Promise<ReencryptResult> {
  if (options.purpose === 'audit-signing') {
    throw new AppError('KEY_OPERATION_INVALID', {
      detail: 'audit-signing keys protect no rows: nothing to re-encrypt.',
    });
  }
  await ring.reload();
  const target = await ring.active(options.purpose);
  const activated = await activatedAt(knex, options.purpose, target.version);
  const settledAt = (activated?.getTime() ?? Date.now()) + options.propagationMs;
  const started = Date.now();
  await audit(knex, options, target.version, 'key.reencrypt.started', 'success', {});

  const outcomes: FieldSetOutcome[] = [];
  let stopped = false;
  for (const set of fieldSetsFor(options.purpose, options.registry)) {
    const outcome = await runFieldSet(knex, ring, set, target.version, settledAt, options);
    outcomes.push(outcome.result);
    if (outcome.stopped) {
      stopped = true;
      break;
    }
  }
  const ok = !stopped && outcomes.every((o) => o.failures.length === 0 && o.remaining === 0);
  const summary = outcomes.map((o) => ({
    fieldSet: o.fieldSet,
    moved: o.moved,
    passes: o.passes,
    remaining: o.remaining,
    failures: o.failures.length,
  }));
  await audit(
    knex,
    options,
    target.version,
    stopped ? 'key.reencrypt.interrupted' : 'key.reencrypt.completed',
    ok || stopped ? 'success' : 'failure',
    { fieldSets: summary },
  );
  return {
    purpose: options.purpose,
    targetVersion: target.version,
    fieldSets: outcomes,
    stopped,
    seconds: (Date.now() - started) / 1000,
    ok,
  };
}

async function runFieldSet(
  knex: Knex,
  ring: KeyRing,
  set: EncryptedFieldSet,
  targetVersion: number,
  settledAt: number,
  options: ReencryptOptions,
): Promise<{ result: FieldSetOutcome; stopped: boolean }> {
  const where: ProgressKey = { purpose: options.purpose, target_version: targetVersion, field_set: set.name };
  const saved = await startProgress(knex, where, new Date());
  const resumedFrom = saved.cursor === '' ? undefined : saved.cursor;

  let cursor = saved.cursor;
  let moved = 0;
  let passes = 0;
  let stopped = false;
  const remainingRows = async (): Promise<number> => {
    const counts = await set.countByVersion(knex);
    let behind = 0;
    for (const [version, count] of counts) if (version < targetVersion) behind += count;
    return behind;
  };

  const total = (await remainingRows()) + saved.rows_done;
  const rate = new RateMeter();
  let done = saved.rows_done;
  for (;;) {
    passes += 1;
    const pass = await runPass(knex, ring, set, targetVersion, cursor, options, where, (n) => {
      moved += n;
      done += n;
      rate.add(n);
      const perSecond = rate.perSecond();
      options.onProgress?.({
        fieldSet: set.name,
        rowsDone: done,
        rowsTotal: Math.max(total, done),
        rowsPerSecond: perSecond,
        etaSeconds: perSecond > 0 ? Math.max(total - done, 0) / perSecond : undefined,
      });
    });
    if (pass.stopped) {
      stopped = true;
      break;
    }
    cursor = '';
    // Wait until no instance can still write under the old version, then count what is left.
    const wait = settledAt - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const left = (await remainingRows()) - (await countFailures(knex, where));
    if (left <= 0 || passes >= MAX_PASSES) break;
    await rewindProgress(knex, where);
  }
  const remaining = await remainingRows();
  const failures = await listFailures(knex, where);
  if (!stopped) await finishProgress(knex, where, { completed: remaining === 0, passes });
  return { result: { fieldSet: set.name, moved, passes, remaining, failures, resumedFrom }, stopped };
}

/** One walk over the row keys after `from`, `lanes` batches in flight. */
async function runPass(
  knex: Knex,
  ring: KeyRing,
  set: EncryptedFieldSet,
  targetVersion: number,
  from: string,
  options: ReencryptOptions,
  where: ProgressKey,
  onMoved: (n: number) => void,
): Promise<{ stopped: boolean }> {
  let next = from;
  let exhausted = false;
  let stopped = false;
  // Starting keys of batches not yet committed: the stored cursor never passes the oldest of them.
  const inFlight = new Set<string>();
  let reading: Promise<void> = Promise.resolve();
  const throttle = new Throttle(options.maxRowsPerSecond);

  const lane = async (): Promise<void> => {
    for (;;) {
      if (options.shouldStop?.() === true) {
        stopped = true;
        return;
      }
      // Reads are serialised (each starts after the previous batch's last key); writes overlap.
      let after = '';
      let batch: Awaited<ReturnType<EncryptedFieldSet['prepareBatch']>> | undefined;
      const read = reading.then(async () => {
        if (exhausted || stopped) return;
        after = next;
        const target = await ring.version(options.purpose, targetVersion);
        batch = await set.prepareBatch(knex, {
          after,
          limit: options.batchSize,
          target,
          keyRing: ring,
          now: new Date(),
        });
        if (batch.read < options.batchSize || batch.lastKey === undefined) exhausted = true;
        next = batch.lastKey ?? next;
        inFlight.add(after);
      });
      reading = read.catch(() => undefined);
      await read;
      if (batch === undefined) return;
      const prepared = batch;
      try {
        const n = await writeBatch(
          async () =>
            knex.transaction(async (trx) => {
              const moved = await prepared.write(trx);
              await recordFailures(trx, where, prepared.failures);
              const others = [...inFlight].filter((k) => k !== after);
              const lowWater = [prepared.lastKey ?? after, ...others].sort()[0] ?? after;
              await advanceProgress(trx, where, lowWater, moved);
              return moved;
            }),
          options.purpose,
          targetVersion,
        );
        onMoved(n);
        await throttle.take(prepared.read);
      } finally {
        inFlight.delete(after);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.lanes) }, () => lane()));
  return { stopped };
}

/**
 * Runs one batch's transaction. When the database refuses it because the target version stopped
 * being active (another rotation committed during this run), the run stops with a clear message
 * instead of the raw check violation: every batch committed so far stands (and is counted), and a
 * rerun continues under the version now active.
 */
async function writeBatch(write: () => Promise<number>, purpose: KeyPurpose, targetVersion: number): Promise<number> {
  try {
    return await write();
  } catch (error) {
    if (!isKeyVersionNotWritable(error)) throw error;
    throw new AppError('KEY_OPERATION_INVALID', {
      detail:
        `${purpose} v${targetVersion} is no longer active (a rotation committed during this run): ` +
        'run keys reencrypt again; the rows moved so far stay moved',
      cause: error,
    });
  }
}

async function audit(
  knex: Knex,
  options: ReencryptOptions,
  targetVersion: number,
  action: string,
  outcome: 'success' | 'failure',
  details: Record<string, unknown>,
): Promise<void> {
  await knex.transaction((trx) =>
    appendAuditEvent(trx, {
      ...options.actor,
      action,
      outcome,
      resource: `key:${options.purpose}:v${targetVersion}`,
      details: { batchSize: options.batchSize, lanes: options.lanes, ...details },
    }),
  );
}

/** Rows per second over the last few seconds (what a progress bar's ETA should follow). */
class RateMeter {
  private readonly samples: { at: number; n: number }[] = [];
  private readonly startedAt = Date.now();

  add(n: number): void {
    this.samples.push({ at: Date.now(), n });
    while (this.samples.length > 1 && Date.now() - (this.samples[0]?.at ?? 0) > 5_000) this.samples.shift();
  }

  perSecond(): number {
    const first = this.samples[0];
    const last = this.samples.at(-1);
    if (first === undefined || last === undefined) return 0;
    if (this.samples.length < 2 || last.at === first.at) {
      return (this.samples.reduce((sum, s) => sum + s.n, 0) * 1000) / Math.max(Date.now() - this.startedAt, 1);
    }
    // Rows after the first sample, over the time since it.
    return ((this.samples.reduce((sum, s) => sum + s.n, 0) - first.n) * 1000) / (last.at - first.at);
  }
}

class Throttle {
  private readonly startedAt = Date.now();
  private rows = 0;
  constructor(private readonly maxPerSecond: number | undefined) {}

  async take(n: number): Promise<void> {
    if (this.maxPerSecond === undefined) return;
    this.rows += n;
    const due = this.startedAt + (this.rows / this.maxPerSecond) * 1000;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }
}
