/**
 * Card-data retention (PCI DSS 3.2.1: keep card data no longer than needed; docs/data-protection.md).
 *
 * A card is *used* when it changes (created, its PAN attached, a later expiry seen, moved by a merge)
 * or when a payment made with it changes (any webhook fact). A card whose last use is older than the
 * retention period loses its PAN ciphertext: the token, brand, last 4, expiry, the payments and the
 * loyalty history stay, and its PAN fingerprints too unless the policy drops them (then the same card
 * presented again is a new card). Detokenising it answers `410 CARD_PAN_PURGED`.
 *
 * Every run, planned or applied, reports its evidence for the auditor's quarterly check: how many
 * cards were (or would be) purged, how many still hold a PAN and the last use of the oldest of them
 * (which must be within the period after a run), and how many were ever purged. An applied run is one
 * transaction, serialised across instances by an advisory lock, recorded in `card_retention_runs`
 * (append-only) and in the audit trail (counts only). The scheduled run is keyed by its UTC day, so
 * it happens once a day across any number of instances.
 */
import type { Knex } from 'knex';
import { appendAuditEvent } from '../audit/audit-log.js';
import type { Actor } from '../auth/actors.js';
import type { Clock } from '../clock/clock.js';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import {
  cardsWithPan,
  countPurged,
  dropPanFingerprints,
  latestRetentionRuns,
  lockRetentionRun,
  purgePans,
  recordRetentionRun,
  type RetentionRunRow,
} from './retention-store.js';

const DAY_MS = 86_400_000;
const BATCH = 500;

export interface RetentionPolicy {
  /** Days without use after which a PAN is purged; 0: no policy (the service refuses to run). */
  readonly days: number;
  readonly keepFingerprints: boolean;
}

/**
 * When each of these cards was last used by a payment (the payments feature answers, handed in by
 * the composition root); a card without payments is absent.
 */
export type LastPaymentUse = (db: Knex | Knex.Transaction, tokens: readonly string[]) => Promise<Map<string, Date>>;

export interface RetentionEvidence {
  readonly mode: 'plan' | 'manual' | 'scheduled';
  /** The run's key (`scheduled:<day>`, `manual:<id>`); absent for a plan. */
  readonly runKey?: string;
  /** False when the day's scheduled run had already been made (by this or another instance). */
  readonly ran: boolean;
  readonly retentionDays: number;
  readonly cutoff: string;
  readonly keepFingerprints: boolean;
  /** Cards purged by this run (a plan: that an apply now would purge). */
  readonly purged: number;
  readonly fingerprintsDropped: number;
  /** Cards still holding a PAN after the run (a plan: after an apply now). */
  readonly remainingWithPan: number;
  /** The last use of the least recently used card still holding a PAN; null when none does. */
  readonly oldestRemainingLastUsedAt: string | null;
  /** Cards whose PAN was ever purged, this run included. */
  readonly purgedTotal: number;
}

interface Scan {
  readonly due: string[];
  readonly remaining: number;
  readonly oldest: Date | undefined;
}

export class CardRetention {
  constructor(
    private readonly knex: Knex,
    private readonly deps: { policy: RetentionPolicy; lastPaymentUse: LastPaymentUse; now: Clock },
  ) {}

  get configured(): boolean {
    return this.deps.policy.days > 0;
  }

  /** What an apply would do now; writes nothing. */
  async plan(): Promise<RetentionEvidence> {
    const { cutoff } = this.window();
    const scan = await this.scan(this.knex, cutoff);
    const purgedTotal = (await countPurged(this.knex)) + scan.due.length;
    return this.evidence('plan', undefined, cutoff, scan, scan.due.length, 0, purgedTotal);
  }

  /** Purges now (a CLI's `--apply`): always runs, under a key of its own. */
  apply(actor: Actor): Promise<RetentionEvidence> {
    return this.run('manual', `manual:${newId('req')}`, actor);
  }

  /** The day's scheduled run: made once per UTC day across every instance; `ran: false` if made already. */
  runScheduled(): Promise<RetentionEvidence> {
    const day = this.deps.now().toISOString().slice(0, 10);
    return this.run('scheduled', `scheduled:${day}`, { subject: 'system', origin: 'scheduler' });
  }

  /** The latest recorded runs, newest first. */
  history(limit = 10): Promise<RetentionRunRow[]> {
    return latestRetentionRuns(this.knex, limit);
  }

  private async run(mode: 'manual' | 'scheduled', runKey: string, actor: Actor): Promise<RetentionEvidence> {
    return this.knex.transaction(async (trx) => {
      const done = await lockRetentionRun(trx, runKey);
      const { now, cutoff } = this.window();
      if (done) {
        const scan = await this.scan(trx, cutoff);
        return { ...this.evidence(mode, runKey, cutoff, scan, 0, 0, await countPurged(trx)), ran: false };
      }
      const scan = await this.scan(trx, cutoff);
      const purgedTokens: string[] = [];
      let dropped = 0;
      for (let i = 0; i < scan.due.length; i += BATCH) {
        const tokens = await purgePans(trx, scan.due.slice(i, i + BATCH), cutoff, now);
        purgedTokens.push(...tokens);
        if (!this.deps.policy.keepFingerprints) dropped += await dropPanFingerprints(trx, tokens);
      }
      const purgedTotal = await countPurged(trx);
      // A card the scan found due but changed meanwhile kept its PAN: counted as remaining.
      const kept = { ...scan, remaining: scan.remaining + (scan.due.length - purgedTokens.length) };
      const evidence = this.evidence(mode, runKey, cutoff, kept, purgedTokens.length, dropped, purgedTotal);
      await recordRetentionRun(trx, {
        run_key: runKey,
        mode,
        retention_days: this.deps.policy.days,
        cutoff,
        keep_fingerprints: this.deps.policy.keepFingerprints,
        purged: evidence.purged,
        fingerprints_dropped: dropped,
        remaining_with_pan: evidence.remainingWithPan,
        oldest_remaining_last_used_at: kept.oldest ?? null,
        purged_total: purgedTotal,
        ran_by: actor.subject,
        ran_at: now,
      });
      // Counts only: no token list (the run row and the cards' purge times say which).
      await appendAuditEvent(
        trx,
        {
          actor: actor.subject,
          actorType: mode === 'scheduled' ? 'system' : 'operator',
          action: 'card.retention.purged',
          outcome: 'success',
          origin: actor.origin,
          resource: runKey,
          details: {
            retentionDays: this.deps.policy.days,
            cutoff: cutoff.toISOString(),
            keepFingerprints: this.deps.policy.keepFingerprints,
            purged: evidence.purged,
            fingerprintsDropped: dropped,
            remainingWithPan: evidence.remainingWithPan,
            oldestRemainingLastUsedAt: evidence.oldestRemainingLastUsedAt,
          },
        },
        now,
      );
      return evidence;
    });
  }

  private window(): { now: Date; cutoff: Date } {
    if (!this.configured) {
      throw new AppError('RETENTION_NOT_CONFIGURED', {
        detail: 'Set CARD_RETENTION_DAYS to the retention period (days) of the card-data retention policy.',
      });
    }
    const now = this.deps.now();
    return { now, cutoff: new Date(now.getTime() - this.deps.policy.days * DAY_MS) };
  }

  /** Every card holding a PAN, in token order: those last used before the cutoff are due. */
  private async scan(db: Knex | Knex.Transaction, cutoff: Date): Promise<Scan> {
    const due: string[] = [];
    let remaining = 0;
    let oldest: Date | undefined;
    for (let after = ''; ;) {
      const cards = await cardsWithPan(db, after, BATCH);
      if (cards.length === 0) break;
      const paid = await this.deps.lastPaymentUse(
        db,
        cards.map((c) => c.token),
      );
      for (const card of cards) {
        const payment = paid.get(card.token);
        const lastUse = payment !== undefined && payment > card.updated_at ? payment : card.updated_at;
        if (lastUse < cutoff) {
          due.push(card.token);
        } else {
          remaining += 1;
          if (oldest === undefined || lastUse < oldest) oldest = lastUse;
        }
      }
      after = (cards.at(-1) as { token: string }).token;
    }
    return { due, remaining, oldest };
  }

  private evidence(
    mode: RetentionEvidence['mode'],
    runKey: string | undefined,
    cutoff: Date,
    scan: Scan,
    purged: number,
    fingerprintsDropped: number,
    purgedTotal: number,
  ): RetentionEvidence {
    return {
      mode,
      ...(runKey === undefined ? {} : { runKey }),
      ran: mode !== 'plan',
      retentionDays: this.deps.policy.days,
      cutoff: cutoff.toISOString(),
      keepFingerprints: this.deps.policy.keepFingerprints,
      purged,
      fingerprintsDropped,
      remainingWithPan: scan.remaining,
      oldestRemainingLastUsedAt: scan.oldest?.toISOString() ?? null,
      purgedTotal,
    };
  }
}
