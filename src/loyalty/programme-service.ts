/**
 * The programme's use cases: read the version in force, publish a new one (audited), and the rules
 * of a given version (immutable, so cached forever once read).
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { appendAuditEvent, canonicalJson } from '../audit/audit-log.js';
import { toVersion, type ProgrammeRules, type ProgrammeVersion, type VersionRow } from './programme.js';
import { currentProgramme, insertVersion, lockLatestVersion, programmeVersion } from './programme-store.js';
import { checkTierPolicy } from './tier-policy.js';

export class ProgrammeService {
  private readonly rulesByVersion = new Map<number, ProgrammeRules>();

  constructor(
    private readonly knex: Knex,
    private readonly now: () => Date = () => new Date(),
  ) {}

  current(): Promise<ProgrammeVersion> {
    return currentProgramme(this.knex);
  }

  /** The rules of one version, read on the caller's transaction the first time. */
  async rules(db: Knex | Knex.Transaction, version: number): Promise<ProgrammeRules> {
    let rules = this.rulesByVersion.get(version);
    if (rules === undefined) {
      // Versions are immutable: caching one forever is safe.
      rules = (await programmeVersion(db, version)).rules;
      this.rulesByVersion.set(version, rules);
    }
    return rules;
  }

  /**
   * Adds a version effective now, audited. Versions are serialised by locking the newest one, so two
   * concurrent changes become two consecutive versions rather than a conflict.
   */
  async publish(rules: ProgrammeRules, actor: { subject: string; origin: string }): Promise<ProgrammeVersion> {
    const now = this.now();
    if (rules.tiers !== undefined) checkTierPolicy(rules.tiers);
    return this.knex.transaction(async (trx) => {
      const latest = await lockLatestVersion(trx);
      // Effective no earlier than the previous version, so "the version in force at t" is monotonic.
      const effectiveFrom = now < latest.effective_from ? latest.effective_from : now;
      const row: VersionRow = {
        version: latest.version + 1,
        rules: JSON.stringify(rules),
        effective_from: effectiveFrom,
        created_by: actor.subject,
        created_at: now,
      };
      await insertVersion(trx, row);
      await appendAuditEvent(
        trx,
        {
          actor: actor.subject,
          actorType: 'client',
          action: 'loyalty.programme.published',
          outcome: 'success',
          origin: actor.origin,
          resource: `programme:v${row.version}`,
          // The rules themselves are in loyalty_programme_versions (immutable); the trail pins them by
          // hash. Not the values: a rate such as 8/9 prints a digit run the PAN guard rightly refuses.
          details: {
            version: row.version,
            previous: latest.version,
            // base64url, not hex: a hex digest holds a 13-digit run every few hundred versions.
            rulesSha256: createHash('sha256').update(canonicalJson(rules)).digest('base64url'),
          },
        },
        now,
      );
      return toVersion({ ...row, rules });
    });
  }
}
