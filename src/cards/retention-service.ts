/**
 * Card-data retention (PCI DSS 3.2.1: keep card data no longer than needed; docs/data-protection.md).
 *
 * A card is *used* when it changes (created, its PAN attached, a later expiry seen, moved by a merge),
 * when a payment made with it changes (any webhook fact), or when it is detokenised or recognised by
 * tokenise (`cards.last_used_at`, written at most once a day). A card whose last use is older than the
 * retention period loses its PAN ciphertext: the token, brand, last 4, expiry, the payments and the
 * loyalty history stay, and its PAN fingerprints too unless the policy drops them (then the same card
 * presented again is a new card). Detokenising it answers `410 CARD_PAN_PURGED`.
 *
 * Every run, planned or applied, reports its evidence for the auditor's quarterly check: how many
 * cards were (or would be) purged, how many still hold a PAN and the last use of the oldest of them
 * (which must be within the period after a run), and how many were ever purged. An applied run is one
 * transaction, serialised across instances by an advisory lock, recorded in `card_retention_runs`
 * and `card_retention_purges` (append-only) and in the audit trail (counts and a digest committing to
 * the purge list). The scheduled run is keyed by its UTC day, so it happens once a day across any
 * number of instances; a run counts as made only with its intact audit entry (a run row inserted by
 * hand does not stop retention: the run is made under a re-run key and says so). `verify()` checks
 * the record against the cards (docs/data-protection.md).
 */
import type { Knex } from 'knex';
import { createHash } from 'node:crypto';
import { appendAuditEvent, intactEntriesOn } from '../audit/audit-log.js';
import type { Actor, Caller } from '../auth/actors.js';
import type { Clock } from '../clock/clock.js';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import {
  allRetentionRuns,
  cardsWithPan,
  countPurged,
  dropPanFingerprints,
  lastListedPurge,
  latestRetentionRuns,
  listedPurgesHoldingPan,
  lockRetentionRun,
  purgedTokensOf,
  purgePans,
  recordPurges,
  recordRetentionRun,
  rerunKeysOf,
  type RetentionRunRow,
} from './retention-store.js';

export { markCardUsed, useMarkDue } from './retention-store.js';

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
  /** The requested run's key, when it was recorded without an intact audit entry (forged): re-run under `runKey`. */
  readonly replacesUnverifiedRun?: string;
}

/** The commitment a run's audit entry makes to the cards it purged: a digest of their sorted tokens. */
export function purgedTokensDigest(tokens: readonly string[]): string {
  return createHash('sha256')
    .update(JSON.stringify(['loyalty-vault/card-retention-purges/v1', [...tokens].sort()]))
    .digest('base64url');
}

const PURGED = 'card.retention.purged';
export const PAN_RESTORED = 'card.pan.restored';

/**
 * Whether this card's PAN stands purged by the audited record: it is listed by a run, and no intact
 * `card.pan.restored` entry (the PAN presented again) follows its last listed purge. True even if
 * the ciphertext was put back by hand.
 */
export async function panPurgedOnRecord(db: Knex | Knex.Transaction, token: string): Promise<boolean> {
  const purgedAt = await lastListedPurge(db, token);
  if (purgedAt === undefined) return false;
  const restored = await intactEntriesOn(db, PAN_RESTORED, token);
  return !restored.some((e) => new Date(e.occurredAt) >= purgedAt);
}

/** The PAN presented again for a card the record lists as purged: stored again, and audited as such. */
export async function auditPanRestored(trx: Knex.Transaction, token: string, caller: Caller, now: Date): Promise<void> {
  if (!(await panPurgedOnRecord(trx, token))) return;
  await appendAuditEvent(
    trx,
    {
      actor: caller.subject,
      actorType: 'client',
      action: PAN_RESTORED,
      outcome: 'success',
      origin: caller.origin,
      resource: token,
    },
    now,
  );
}

export interface RetentionFinding {
  readonly runKey?: string;
  readonly token?: string;
  readonly finding: string;
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

  /**
   * The auditor's integrity check (`loyalty retention --verify`): every run row has its intact audit
   * entry, whose commitment matches the run's purge list; every listed card still holds no PAN (or
   * an intact `card.pan.restored` follows its purge); the purged total never decreases.
   */
  async verify(): Promise<RetentionFinding[]> {
    const findings: RetentionFinding[] = [];
    let total = 0;
    for (const run of await allRetentionRuns(this.knex)) {
      const [entry] = await intactEntriesOn(this.knex, PURGED, run.run_key);
      if (entry === undefined) {
        findings.push({
          runKey: run.run_key,
          finding: `run ${run.run_key} has no intact ${PURGED} audit entry (inserted or edited outside the service)`,
        });
        continue;
      }
      const tokens = await purgedTokensOf(this.knex, run.run_key);
      const committed = entry.details['purgedTokensDigest'];
      // Runs made before the purge list existed commit to none (their cards were listed at migration).
      if (
        committed !== undefined &&
        (committed !== purgedTokensDigest(tokens) || entry.details['purged'] !== tokens.length)
      ) {
        findings.push({
          runKey: run.run_key,
          finding: `run ${run.run_key}: its purge list does not match the commitment in its audit entry`,
        });
      }
      if (run.purged_total < total) {
        findings.push({
          runKey: run.run_key,
          finding: `run ${run.run_key}: the purged total went down (${total} → ${run.purged_total})`,
        });
      }
      total = Math.max(total, run.purged_total);
    }
    for (const listed of await listedPurgesHoldingPan(this.knex)) {
      if (await panPurgedOnRecord(this.knex, listed.token)) {
        findings.push({
          token: listed.token,
          finding: `card ${listed.token} was purged (${new Date(listed.purged_at).toISOString()}) but holds a PAN again or lost its purge mark, with no ${PAN_RESTORED} audit entry`,
        });
      }
    }
    return findings;
  }

  /** Whether a run under this key is done: recorded, and its audit entry (or a re-run's) intact. */
  private async doneOnRecord(trx: Knex.Transaction, runKey: string): Promise<'done' | 'unverified' | 'new'> {
    if (!(await lockRetentionRun(trx, runKey))) return 'new';
    for (const key of [runKey, ...(await rerunKeysOf(trx, runKey))]) {
      if ((await intactEntriesOn(trx, PURGED, key)).length > 0) return 'done';
    }
    return 'unverified';
  }

  private async run(mode: 'manual' | 'scheduled', requestedKey: string, actor: Actor): Promise<RetentionEvidence> {
    return this.knex.transaction(async (trx) => {
      const state = await this.doneOnRecord(trx, requestedKey);
      // A run row without its intact audit entry is not a run: purge anyway, under a re-run key, and say so.
      const runKey = state === 'unverified' ? `${requestedKey}:rerun:${newId('req')}` : requestedKey;
      const { now, cutoff } = this.window();
      if (state === 'done') {
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
      await recordPurges(trx, runKey, purgedTokens, now);
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
      // Counts, and a commitment to the purge list (card_retention_purges): a row added to or deleted
      // from it no longer matches; no tokens themselves.
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
            purgedTokensDigest: purgedTokensDigest(purgedTokens),
            ...(state === 'unverified' ? { replacesUnverifiedRun: requestedKey } : {}),
          },
        },
        now,
      );
      return state === 'unverified' ? { ...evidence, replacesUnverifiedRun: requestedKey } : evidence;
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
        let lastUse = payment !== undefined && payment > card.updated_at ? payment : card.updated_at;
        if (card.last_used_at !== null && card.last_used_at > lastUse) lastUse = card.last_used_at;
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
