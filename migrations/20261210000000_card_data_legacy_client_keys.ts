/**
 * Client `Idempotency-Key`s an earlier release stored as sent holding card data (issue 16, third
 * attacker review): `idempotency_keys.key` and `event_subscription_secrets.rotation_key` are exempt
 * from the database guard (20261206000930, 20261208000100; checked at the edge), and a canonical UUID
 * key whose groups read as a card number was stored raw before 20261209500000 made it a keyed digest.
 * 20261209300000 recorded the gateway references and audit columns only; this adds the client keys,
 * with the same role-aware rule (src/card-data/legacy-references.ts, role `idempotency-key`):
 * - a bare UUID key is accepted at the edge and a retry of it replays that very row (the service
 *   looks the raw key up before the digest): left, recorded in `card_data_legacy_findings` by table,
 *   column and row (`scope@created_at` for an idempotency row, whose primary key holds the value; the
 *   secret's `id`), never the value;
 * - any other key holding card data is refused at the edge today (422), so no retry can ever match it:
 *   re-keyed to `<the key masked by the guard>~<HMAC under a key of this run, discarded>`, as
 *   20261209300000 re-keys references (two keys never merge; nothing left confirms a guessed number).
 * A finding already recorded (a database where 20261209300000 ran a version of `findLegacyCardData`
 * that read these columns) is not recorded twice.
 *
 * `down` cannot restore card data, and the findings table is append-only: it does nothing.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { maskCardData } from '../src/card-data/card-data-guard.js';
import { findLegacyClientKeys, legacyClientKeys } from '../src/db/legacy-card-data.js';

export async function up(knex: Knex): Promise<void> {
  const runKey = randomBytes(32);
  try {
    for (const row of await legacyClientKeys(knex, 'rekey')) {
      const rekeyed = `${maskCardData(row.key)}~${createHmac('sha256', runKey).update(row.key, 'utf8').digest('base64url').slice(0, 22)}`;
      const column = row.table === 'idempotency_keys' ? 'key' : 'rotation_key';
      await knex(row.table)
        .where(row.where)
        .update({ [column]: rekeyed });
    }
  } finally {
    runKey.fill(0);
  }
  for (const f of await findLegacyClientKeys(knex)) {
    const known = (await knex('card_data_legacy_findings')
      .where({ table_name: f.table, column_name: f.column, row_key: f.row })
      .first('id')) as { id: number } | undefined;
    if (known === undefined) {
      await knex('card_data_legacy_findings').insert({ table_name: f.table, column_name: f.column, row_key: f.row });
    }
  }
}

export async function down(): Promise<void> {
  // Card data re-keyed is not put back; findings are append-only (cleared only by a reviewed migration).
}
