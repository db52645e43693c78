/**
 * `keys hsm init`: creates the master key inside the PKCS#11 token (src/keys/master-key-sources/
 * pkcs11.ts) and records it in the audit trail (who, which token, which label, its key check value).
 *
 * The key is created BEFORE the CLI loads its master-key source (src/cli/keys.ts), so that a first
 * installation can name the new key as its source; if the audit entry cannot then be written, the
 * key just created is destroyed again: no unaudited key stays in the token, UNLESS the database
 * already holds rows wrapped under it (a first installation whose configuration names the new label
 * wraps its data keys before this command audits; another instance may start meanwhile): then it is
 * kept and the CLI says so, since destroying it would strand those data keys for good. Creating a key is not a key-state change and needs no dual control; making it the
 * master key is `keys rotate --purpose master`, which does.
 */
import { parseArgs } from 'node:util';
import { appendAuditEvent } from '../audit/audit-log.js';
import type { TokenKeyCreated } from '../keys/master-key-sources/pkcs11.js';
import type { KeysContext } from './keys-context.js';
import { UsageError } from './usage-error.js';

export const HSM_USAGE = `  hsm init [--label <key label>]                  create the master key in the PKCS#11 token (PKCS11_MODULE,
                                                  PKCS11_TOKEN_LABEL, PKCS11_PIN_FILE): AES-256, generated in the
                                                  token, never extractable; refused when the label exists.
                                                  --label defaults to PKCS11_KEY_LABEL`;

/** The label `hsm init` creates: --label, else PKCS11_KEY_LABEL of the configured pkcs11 source. */
export function parseHsmInit(args: readonly string[], configuredLabel: string | undefined): string {
  const [sub, ...rest] = args;
  if (sub !== 'init') throw new UsageError('hsm: the subcommand is init');
  const { values } = parseArgs({ args: rest, options: { label: { type: 'string' } }, strict: true });
  const label = values.label ?? configuredLabel;
  if (label === undefined || label.trim() === '') {
    throw new UsageError('hsm init: --label is required unless MASTER_KEY_SOURCE=pkcs11 names PKCS11_KEY_LABEL');
  }
  return label.trim();
}

export async function hsmCommand(
  args: readonly string[],
  ctx: KeysContext,
  out: (text: string) => void,
): Promise<number> {
  parseHsmInit(args, 'parsed-again-by-keys.ts');
  // The token refused before the database was open; thrown here, the key CLI audits it (key.hsm.refused).
  if (ctx.tokenKeyRefusal !== undefined) throw ctx.tokenKeyRefusal;
  const created: TokenKeyCreated | undefined = ctx.tokenKeyCreated;
  if (created === undefined)
    throw new UsageError('hsm init needs PKCS11_MODULE, PKCS11_TOKEN_LABEL and PKCS11_PIN_FILE');
  await ctx.knex.transaction((trx) =>
    appendAuditEvent(trx, {
      ...ctx.actor,
      action: 'master-key.created-in-token',
      outcome: 'success',
      resource: `master-key:${created.keyId}`,
      details: {
        tokenLabel: created.tokenLabel,
        keyLabel: created.keyLabel,
        keyCheckValue: created.keyCheckValue,
        attributes: 'AES-256, CKA_SENSITIVE, not CKA_EXTRACTABLE, not CKA_MODIFIABLE, encrypt/decrypt only',
      },
    }),
  );
  out(
    `created the master key "${created.keyLabel}" in token "${created.tokenLabel}": AES-256, generated in the token, ` +
      `never extractable; key check value ${created.keyCheckValue}, key id ${created.keyId}`,
  );
  out(
    'next: record the key check value in the key ceremony record; to make it the master key, set MASTER_KEY_SOURCE=pkcs11 ' +
      'and PKCS11_KEY_LABEL on every instance and this CLI, keep the current key as a previous one, and run ' +
      '`keys rotate --purpose master` (docs/key-management.md)',
  );
  return 0;
}
