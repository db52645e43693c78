/**
 * Resuming an interrupted rotation: proof that the published version being activated was published
 * with authority, and has never been in use before (PCI DSS 3.6.1.2, 3.7.7: no unauthorised
 * substitution of a key).
 *
 * `keys rotate --apply` finds a version in state `published` and activates it without a new request:
 * the publication was the authorised step, the activation only completes it. But `data_keys.state`
 * is a plain column: a database writer can set a retired (or any) version back to `published`, and
 * the resume would make it active with nobody's approval. So a version is resumed only when:
 *
 * - it is the purpose's newest version, in state `published`, with no activation, retirement or
 *   destruction time (a rotation always publishes `newest + 1` and activates it before the next);
 * - its state history is monotonic: the keyed audit trail holds no `key.activated`, `key.retired`
 *   or `key.destroyed` entry for it (a version once in use never becomes active again);
 * - the trail holds exactly one successful `key.published` entry for that exact version, its MAC
 *   intact (`auditEntryIntact`), and it carries the executed request: that request is in the sealed
 *   executed-request ledger with the same payload digest, and its stored payload (same digest) is a
 *   rotation of this purpose to this version. Or, in development only, the single-operator waiver.
 *
 * Anything else is refused with KEY_STATE_TAMPERED (audited by the caller) and nothing changes.
 * Deleting the entries that would refuse breaks the keyed chain (`keys audit verify`); forging a
 * `key.published` entry needs the audit-chain key.
 */
import type { Knex } from 'knex';
import { auditEntryIntact } from '../audit/audit-log.js';
import { AppError } from '../errors/app-error.js';
import { readLedger } from './dual-control-ledger.js';
import type { KeyPurpose } from './key-ring.js';
import type { MasterKeySource } from './master-key-types.js';
import { parsePayload, sha256B64 } from './request-payload.js';
import { keyVersionsOf } from './key-version-store.js';
import { requestExecution, requestPayload, successfulKeyEntries } from './publication-evidence-store.js';

/** Entries that put a version in use or out of it: after any of them it is never resumed. */
const LATER_STATES = ['key.activated', 'key.retired', 'key.destroyed'];

function refused(purpose: KeyPurpose, version: number, why: string): AppError {
  return new AppError('KEY_STATE_TAMPERED', {
    detail: `${purpose} v${version} is not resumed: ${why}. Its state was changed outside the key CLI; nothing was activated.`,
  });
}

export async function assertResumable(
  trx: Knex.Transaction,
  target: { purpose: KeyPurpose; version: number; production: boolean; masterKey: MasterKeySource },
): Promise<void> {
  const { purpose, version } = target;
  const rows = await keyVersionsOf(trx, purpose);
  const row = rows.find((r) => r.version === version);
  if (row?.state !== 'published') throw refused(purpose, version, 'it is not published');
  if (rows.at(-1)?.version !== version) throw refused(purpose, version, 'newer versions exist');
  if (row.activated_at !== null || row.retired_at !== null || row.destroyed_at !== null) {
    throw refused(purpose, version, 'it was activated, retired or destroyed before');
  }
  const entries = await successfulKeyEntries(trx, `key:${purpose}:v${version}`, ['key.published', ...LATER_STATES]);
  const later = entries.find((e) => LATER_STATES.includes(e.action));
  if (later !== undefined) throw refused(purpose, version, `the audit trail records ${later.action} for it`);
  const published = entries.filter((e) => e.action === 'key.published');
  if (published.length !== 1) {
    throw refused(purpose, version, `the audit trail holds ${published.length} key.published entries for it, not one`);
  }
  const entry = published[0]!;
  if (!(await auditEntryIntact(trx, Number(entry.seq)))) {
    throw refused(purpose, version, 'its key.published audit entry does not verify');
  }
  const details = (typeof entry.details === 'string' ? JSON.parse(entry.details) : entry.details) as Record<
    string,
    unknown
  >;
  if (details['authorisation'] === 'single-operator (development only)') {
    if (target.production) throw refused(purpose, version, 'it was published in single-operator mode');
    return;
  }
  const requestId = details['requestId'];
  const digest = details['payloadSha256'];
  if (details['authorisation'] !== 'dual-control' || typeof requestId !== 'string' || typeof digest !== 'string') {
    throw refused(purpose, version, 'its publication names no executed request');
  }
  const ledger = await readLedger(trx, target.masterKey);
  const execution = await requestExecution(trx, requestId);
  if (!ledger.executed.has(requestId) || execution?.operation !== 'rotate' || execution.payload_sha256 !== digest) {
    throw refused(purpose, version, `request ${requestId} is not in the sealed ledger as this rotation`);
  }
  const stored = await requestPayload(trx, requestId);
  const payload = stored === undefined ? undefined : parsePayload(stored);
  if (
    stored === undefined ||
    sha256B64(stored) !== digest ||
    payload?.operation !== 'rotate' ||
    payload.params['purpose'] !== purpose ||
    Number(payload.params['toVersion']) !== version
  ) {
    throw refused(purpose, version, `request ${requestId} did not approve publishing this version`);
  }
}
