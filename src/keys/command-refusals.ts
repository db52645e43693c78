/**
 * The key CLI's catch-all: every refusal of every key command is in the audit trail with its code
 * (docs/key-management.md §4 and §5). The services audit their own refusals in a transaction that
 * commits although the command fails (auditedWrite marks those errors); any other refusal of a key
 * command (a check made before the service's transaction: the custodians a split names, a request
 * that does not exist, an unconfirmed approval, a label the token already holds) is written here as
 * `key.<command>.refused`, outcome `denied`, by the person running the CLI (actor type `operator`).
 *
 * Usage errors (exit 2) are not refusals: they are answered before anything is opened. The details
 * are the code and the error's own text (never caller input beyond the first two arguments, in the
 * resource); the trail masks card data in a refusal's details like any other.
 */
import type { Knex } from 'knex';
import { appendAuditEvent, markRefusalAudited, refusalAudited } from '../audit/audit-log.js';
import { databaseNow } from '../db/database-clock.js';
import { isAppError } from '../errors/app-error.js';
import type { KeyActor } from './key-ring.js';

/** What became of a refusal: already audited, audited now, or why it could not be (the trail refused). */
export type RefusalRecord = 'not-a-refusal' | 'already-audited' | 'audited' | { readonly unaudited: string };

export async function auditCommandRefusal(
  knex: Knex,
  actor: KeyActor,
  command: { readonly name: string; readonly args: readonly string[] },
  error: unknown,
): Promise<RefusalRecord> {
  if (!isAppError(error)) return 'not-a-refusal';
  if (refusalAudited(error)) return 'already-audited';
  try {
    await knex.transaction(async (trx) =>
      appendAuditEvent(
        trx,
        {
          ...actor,
          action: `key.${command.name}.refused`,
          outcome: 'denied',
          resource: `command:${[command.name, ...command.args.slice(0, 2)].join(' ').slice(0, 80)}`,
          details: { code: error.code, reason: error.detail ?? error.title },
        },
        await databaseNow(trx),
      ),
    );
    markRefusalAudited(error);
    return 'audited';
  } catch (failure) {
    // The refusal stands; what is reported is that the trail could not take it (a broken chain, say).
    return { unaudited: isAppError(failure) ? failure.code : 'the audit trail could not be written' };
  }
}
