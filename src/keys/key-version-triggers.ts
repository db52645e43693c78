/**
 * The write-time key check's update triggers, defined once: migration 20261206000750 installs them
 * from here, and `keys status` compares what the database holds against the same definitions
 * ({@link expectedKeyTriggers}), so a trigger dropped, disabled or replaced is reported.
 *
 * Every encrypt-use column is checked on update whenever the row's CIPHERTEXT or its key version
 * changes, against the (new) version: a value re-sealed under the same version (a stale instance
 * rewriting a member's e-mail under a version that is now decrypt-only) is refused like a move to
 * another version. The check itself is `assert_key_version_writable` (migration 20261206000700).
 * Insert triggers are unchanged (every inserted row is checked).
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { userTriggers } from './key-trigger-store.js';

export interface EncryptColumn {
  readonly table: string;
  readonly versionColumn: string;
  readonly ciphertextColumn: string;
  /** The key purpose as SQL: a literal, or `new.<column>` where the row names its purpose. */
  readonly purposeSql: string;
  /** Further columns whose change re-checks the row (the purpose column). */
  readonly alsoOn: readonly string[];
}

export const ENCRYPT_COLUMNS: readonly EncryptColumn[] = [
  {
    table: 'cards',
    versionColumn: 'pan_key_version',
    ciphertextColumn: 'pan_ciphertext',
    purposeSql: `'pan-encryption'`,
    alsoOn: [],
  },
  {
    table: 'card_identifiers',
    versionColumn: 'value_key_version',
    ciphertextColumn: 'value_ciphertext',
    purposeSql: `'pan-encryption'`,
    alsoOn: [],
  },
  {
    table: 'loyalty_accounts',
    versionColumn: 'email_key_version',
    ciphertextColumn: 'email_ciphertext',
    purposeSql: `'pan-encryption'`,
    alsoOn: [],
  },
  {
    table: 'event_subscription_secrets',
    versionColumn: 'secret_key_version',
    ciphertextColumn: 'secret_ciphertext',
    purposeSql: 'new.secret_key_purpose',
    alsoOn: ['secret_key_purpose'],
  },
];

export const updateTriggerName = (c: EncryptColumn): string => `${c.table}_${c.versionColumn}_writable_update`;

/** The PL/pgSQL body of the update trigger function (between the dollar quotes). */
export function updateFunctionBody(c: EncryptColumn): string {
  const changed = [c.versionColumn, c.ciphertextColumn, ...c.alsoOn]
    .map((col) => `new.${col} is distinct from old.${col}`)
    .join(' or ');
  return `
      begin
        if new.${c.versionColumn} is not null and new.${c.ciphertextColumn} is not null and (${changed}) then
          perform assert_key_version_writable(${c.purposeSql}, new.${c.versionColumn}, 'encrypt');
        end if;
        return new;
      end `;
}

export function updateTriggerSql(c: EncryptColumn): { fn: string; trigger: string } {
  const name = updateTriggerName(c);
  const columns = [c.versionColumn, c.ciphertextColumn, ...c.alsoOn].join(', ');
  return {
    fn: `create or replace function ${name}() returns trigger language plpgsql as $$${updateFunctionBody(c)}$$`,
    trigger: `create trigger ${name} before update of ${columns} on ${c.table}
       for each row execute function ${name}()`,
  };
}

/** The SHA-256 of a function body with whitespace collapsed (what the database stores as `prosrc`). */
export function sourceHash(source: string): string {
  return createHash('sha256').update(source.replace(/\s+/g, ' ').trim()).digest('hex');
}

/**
 * Version columns of registered field sets (src/encrypted-field-sets.ts) that deliberately have no
 * write-time key check, each with its reason; docs/key-management.md ("Enforced where the row is
 * written") lists them too, and test/keys/key-check-coverage.test.ts fails on a field set whose
 * column has neither the triggers nor an entry here.
 */
export const KEY_CHECK_EXEMPTIONS: readonly { table: string; column: string; reason: string }[] = [
  {
    table: 'mtls_client_certificates',
    column: 'ca_version',
    reason:
      'written only by `keys mtls issue`, which reads the active CA version from data_keys in the ' +
      'transaction that inserts the certificate, holding the key-state lock shared: no cached ring ' +
      'chooses it, and a rotation or retirement of the CA waits for that transaction',
  },
];

export interface ExpectedTrigger {
  readonly table: string;
  readonly trigger: string;
  readonly fn: string;
  /** undefined: the function body is not checked by hash (only that the trigger exists and is enabled). */
  readonly sourceHash: string | undefined;
}

/** Every key-version trigger the write-time check depends on. */
export function expectedKeyTriggers(): ExpectedTrigger[] {
  const insertOnly = [
    { table: 'cards', column: 'pan_key_version' },
    { table: 'card_identifiers', column: 'value_key_version' },
    { table: 'identifier_fingerprints', column: 'mac_key_version' },
    { table: 'loyalty_accounts', column: 'email_key_version' },
    { table: 'event_subscription_secrets', column: 'secret_key_version' },
  ];
  const out: ExpectedTrigger[] = insertOnly.map(({ table, column }) => ({
    table,
    trigger: `${table}_${column}_writable_insert`,
    fn: `${table}_${column}_writable_insert`,
    sourceHash: undefined,
  }));
  out.push({
    table: 'identifier_fingerprints',
    trigger: 'identifier_fingerprints_mac_key_version_writable_update',
    fn: 'identifier_fingerprints_mac_key_version_writable_update',
    sourceHash: undefined,
  });
  for (const c of ENCRYPT_COLUMNS) {
    out.push({
      table: c.table,
      trigger: updateTriggerName(c),
      fn: updateTriggerName(c),
      sourceHash: sourceHash(updateFunctionBody(c)),
    });
  }
  return out;
}

export interface KeyCheckFinding {
  readonly kind:
    'trigger-missing' | 'trigger-disabled' | 'trigger-altered' | 'rows-under-unreadable-version' | 'key-state-tampered';
  readonly detail: string;
}

/**
 * Verifies that every key-version trigger exists, is enabled (`tgenabled = 'O'`) and, for the update
 * triggers defined here, that its function's source is the expected one (by hash). A database owner can
 * drop, disable or replace them without any other sign: `keys status` reports it (exit 1).
 */
export async function checkKeyTriggers(db: Knex | Knex.Transaction): Promise<KeyCheckFinding[]> {
  const rows = await userTriggers(db);
  const found = new Map(rows.map((r) => [`${r.table}.${r.trigger}`, r]));
  const findings: KeyCheckFinding[] = [];
  for (const e of expectedKeyTriggers()) {
    const row = found.get(`${e.table}.${e.trigger}`);
    if (row === undefined) {
      findings.push({ kind: 'trigger-missing', detail: `trigger ${e.trigger} on ${e.table} is missing` });
    } else if (row.enabled !== 'O') {
      findings.push({
        kind: 'trigger-disabled',
        detail: `trigger ${e.trigger} on ${e.table} is not enabled (tgenabled '${row.enabled}')`,
      });
    } else if (e.sourceHash !== undefined && sourceHash(row.source) !== e.sourceHash) {
      findings.push({
        kind: 'trigger-altered',
        detail: `function ${e.fn}() of trigger ${e.trigger} on ${e.table} differs from its migration`,
      });
    }
  }
  return findings;
}
