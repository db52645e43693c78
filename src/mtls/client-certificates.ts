/* eslint max-lines: ["error", 550] -- issue, register, revoke and list client certificates with their seals and audit */
/**
 * The client CA's operations for the key CLI: create the CA, issue a client certificate (as a
 * PKCS#12 bundle, or for a CSR made on the device), list and revoke. Every issue and revoke is one
 * transaction with its audit entry; refusals are audited too.
 *
 * Authorisation: creating the CA, issuing and revoking are single-operator actions, audited with the
 * operator's name. Revocation must be fast (a stolen till). Issuing is routine enrolment work (tills
 * are installed and replaced every day) that hands out no key material of the service: a certificate
 * is scope-limited, short-lived (at most 397 days), revocable at once and recorded. What changes the
 * CA key itself, rotation, retirement and destruction, goes through dual control like every key
 * (`keys rotate --purpose mtls-client-ca`). A certificate never carries `tokens:detokenise`: that
 * would hand out PAN access on one operator's word.
 *
 * Every record is written with its seal (src/mtls/seals.ts): the service trusts a record's client and
 * scopes only if the seal, made here with the master key, verifies.
 */
import type { Knex } from 'knex';
import type { KeyObject } from 'node:crypto';
import { X509Certificate } from 'node:crypto';
import { appendAuditEvent, auditedWrite } from '../audit/audit-log.js';
import { AppError } from '../errors/app-error.js';
import {
  insertNewKey,
  MAX_CLIENT_CERTIFICATE_DAYS,
  shareKeyStates,
  wrappingAad,
  type KeyActor,
} from '../keys/key-ring.js';
import type { MasterKeySource } from '../keys/master-key-types.js';
import {
  buildPkcs12,
  CLIENT_AUTH_OID,
  certificateFingerprint,
  CsrError,
  formatSerial,
  generateClientKey,
  issueClientCertificate,
  pemToDer,
  publicKeyFromCsr,
  randomSerialHex,
  serialReadsAsCardData,
} from './certificate-authority.js';
import { clientCaHooks } from './client-ca-hooks.js';
import { sealGrant } from './seals.js';
import { appendRevocations, REVOCATIONS_SEALED_ACTION, sealEmptyHead } from './revocation-list.js';
import { bumpRevocationGeneration, findRevocation, lockRevocationHead } from './revocation-store.js';
import {
  activeCa,
  anyCaVersion,
  caCertificateOf,
  findCertificate,
  insertCertificate,
  listCertificates,
  lockKeyRingGeneration,
  markCertificateRevoked,
  revokedUnsealedRows,
  revokedUnsealedSerials,
} from './certificate-store.js';
import {
  CA_PURPOSE,
  grantFieldsOf,
  toRecord,
  trustedCaCertificates,
  type CaVersion,
  type ClientCertificateRecord,
  type ClientCertificateRow,
} from './client-certificate-records.js';

/**
 * Scopes a client certificate may carry: those of the card-data operations that accept one (the
 * `clientCertificate` requirements in openapi.yaml; a test keeps the two equal).
 */
export const CLIENT_CERTIFICATE_SCOPES = ['tokens:write', 'webhooks:platform', 'returns:write'] as const;

/**
 * Revealing PANs is never granted to a certificate. Issuing one is a single-operator action (routine
 * enrolment), and a certificate that could detokenise would let one operator hand out PAN access
 * with no second person involved; there is no dual control for certificates. Detokenise clients use
 * bearer tokens, and the detokenise operation takes no client certificate in any CARD_ROUTES_AUTH
 * mode (openapi.yaml).
 */
const REFUSED_SCOPES: readonly string[] = ['tokens:detokenise'];

/** Letters, digits, `.`, `_`, `-`; no run of 12 or more digits (nothing that could be a PAN). */
const CLIENT_NAME = /^(?!.*\d{12})[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Tills' clocks drift: a certificate is valid from a few minutes before it is issued. */
const BACKDATE_MS = 5 * 60_000;

export interface IssueInput {
  readonly client: string;
  readonly scopes: readonly string[];
  readonly days: number;
  /** A PEM CSR from the device: the certificate is issued for its key and no bundle is made. */
  readonly csrPem?: string | undefined;
  /** The bundle's password (required without a CSR). */
  readonly password?: string | undefined;
  /** Start of validity; defaults to a few minutes ago. Tests backdate it to make expired certificates. */
  readonly notBefore?: Date | undefined;
}

export interface IssuedCertificate {
  readonly record: ClientCertificateRecord;
  readonly certificatePem: string;
  readonly caCertificatePem: string;
  /** The PKCS#12 bundle (key, certificate, CA certificate), without a CSR. */
  readonly pkcs12: Buffer | undefined;
}

export class ClientCertificateAuthority {
  private readonly now: () => Date;

  constructor(
    private readonly deps: {
      readonly knex: Knex;
      readonly masterKey: MasterKeySource;
      readonly actor: KeyActor;
      readonly cryptoperiodDays: number;
      readonly now?: () => Date;
    },
  ) {
    this.now = deps.now ?? (() => new Date());
  }

  /** Creates version 1 of the client CA (active). Later versions come from a dual-controlled rotation. */
  async initCa(): Promise<CaVersion> {
    return this.guarded('mtls.ca.initialised', `key:${CA_PURPOSE}:v1`, async (trx) => {
      await lockKeyRingGeneration(trx);
      const existing = await anyCaVersion(trx);
      if (existing !== undefined) {
        throw new AppError('KEY_OPERATION_INVALID', {
          detail: `The client CA exists (v${existing.version}); replace it with keys rotate --purpose ${CA_PURPOSE}.`,
        });
      }
      await insertNewKey(
        trx,
        this.deps.masterKey,
        CA_PURPOSE,
        1,
        'active',
        this.deps.actor,
        this.deps.cryptoperiodDays,
        clientCaHooks,
      );
      const row = await caCertificateOf(trx, 1);
      await this.audit(trx, 'mtls.ca.initialised', `key:${CA_PURPOSE}:v1`, {
        caCertificateFingerprint: certificateFingerprint(pemToDer(row.certificate_pem)),
      });
      await this.sealEmptyRevocationList(trx);
      return { version: 1, state: 'active', certificatePem: row.certificate_pem, seal: row.certificate_seal };
    });
  }

  /** The CA certificates that the service trusts: every readable version, newest first. */
  async trustedCaCertificates(db: Knex | Knex.Transaction = this.deps.knex): Promise<CaVersion[]> {
    return trustedCaCertificates(db);
  }

  async issue(input: IssueInput): Promise<IssuedCertificate> {
    const resource = `mtls-client:${CLIENT_NAME.test(input.client) ? input.client : '(invalid)'}`;
    return this.guarded('mtls.certificate.issued', resource, async (trx) => {
      checkIssueInput(input);
      // The CA read below stays active until this certificate is committed: a retire or rotation of
      // the CA waits for it (and one already running makes this wait, then read the new state).
      await shareKeyStates(trx);
      const ca = await activeCa(trx);
      if (ca === undefined) {
        throw new AppError('KEY_NOT_FOUND', { detail: 'There is no active client CA: run keys mtls init-ca first.' });
      }
      let subjectPublicKeyPem: string;
      let clientKey: KeyObject | undefined;
      if (input.csrPem !== undefined) {
        try {
          subjectPublicKeyPem = publicKeyFromCsr(input.csrPem);
        } catch (error) {
          if (!(error instanceof CsrError)) throw error;
          throw new AppError('CLIENT_CERTIFICATE_REQUEST_INVALID', { detail: `CSR refused: ${error.message}.` });
        }
      } else {
        const generated = generateClientKey();
        clientKey = generated.privateKey;
        subjectPublicKeyPem = generated.publicKeyPem;
      }
      const notBefore = input.notBefore ?? new Date(this.now().getTime() - BACKDATE_MS);
      const notAfter = new Date(notBefore.getTime() + BACKDATE_MS + input.days * 86_400_000);
      // A CA kept past its cryptoperiod could otherwise sign certificates that outlive it.
      const caValidTo = Date.parse(new X509Certificate(ca.certificate_pem).validTo);
      if (notAfter.getTime() > caValidTo) {
        throw new AppError('CLIENT_CERTIFICATE_REQUEST_INVALID', {
          detail: `The client CA v${ca.version} is valid only until ${new Date(caValidTo).toISOString()}: rotate it (keys rotate --purpose ${CA_PURPOSE}) or ask for fewer days.`,
        });
      }
      const caKey = await this.deps.masterKey.unwrap(ca.wrapped_key, wrappingAad(CA_PURPOSE, ca.version));
      let certificatePem: string;
      try {
        certificatePem = issueClientCertificate({
          caPrivateKeyDer: caKey,
          caCertificatePem: ca.certificate_pem,
          subjectPublicKeyPem,
          client: input.client,
          serialHex: randomSerialHex(),
          notBefore,
          notAfter,
        });
      } finally {
        caKey.fill(0);
      }
      const x509 = new X509Certificate(certificatePem);
      const row: ClientCertificateRow = {
        serial: formatSerial(x509.serialNumber),
        client_name: input.client,
        scopes: [...new Set(input.scopes)].sort(),
        // Whole seconds: what the certificate itself records.
        not_before: new Date(Math.floor(notBefore.getTime() / 1000) * 1000),
        not_after: new Date(Math.floor(notAfter.getTime() / 1000) * 1000),
        fingerprint_sha256: certificateFingerprint(x509.raw),
        ca_version: ca.version,
        key_source: input.csrPem === undefined ? 'generated' : 'csr',
        issued_by: this.deps.actor.actor,
        issued_at: this.now(),
        revoked_at: null,
        revoked_by: null,
        revocation_reason: null,
      };
      await this.insertSealed(trx, row);
      await this.audit(trx, 'mtls.certificate.issued', `mtls-client:${input.client}`, {
        serial: row.serial,
        fingerprint: row.fingerprint_sha256,
        scopes: row.scopes,
        notBefore: row.not_before.toISOString(),
        notAfter: row.not_after.toISOString(),
        caVersion: ca.version,
        keySource: row.key_source,
      });
      const pkcs12 =
        clientKey === undefined
          ? undefined
          : buildPkcs12({
              privateKey: clientKey,
              certificatePem,
              caCertificatePem: ca.certificate_pem,
              password: input.password ?? '',
              friendlyName: input.client,
            });
      return { record: toRecord(row), certificatePem, caCertificatePem: ca.certificate_pem, pkcs12 };
    });
  }

  /**
   * Records a client certificate issued by an external CA (one of `TLS_CLIENT_CA`), so that the
   * service knows its client and scopes: without a record no certificate is accepted, whoever signed
   * it. Refused unless the certificate verifies against one of `externalCaPems`, is a TLS client
   * certificate and is still valid.
   */
  async register(input: {
    readonly certificatePem: string;
    readonly client: string;
    readonly scopes: readonly string[];
    readonly externalCaPems: readonly string[];
  }): Promise<ClientCertificateRecord> {
    const resource = `mtls-client:${CLIENT_NAME.test(input.client) ? input.client : '(invalid)'}`;
    return this.guarded('mtls.certificate.registered', resource, async (trx) => {
      checkClientAndScopes(input.client, input.scopes);
      let certificate: X509Certificate;
      try {
        certificate = new X509Certificate(input.certificatePem);
      } catch {
        throw new AppError('CLIENT_CERTIFICATE_REQUEST_INVALID', { detail: 'Not a PEM X.509 certificate.' });
      }
      const issuer = input.externalCaPems
        .map((pem) => new X509Certificate(pem))
        .find((ca) => certificate.checkIssued(ca) && certificate.verify(ca.publicKey));
      const now = this.now().getTime();
      const problem =
        issuer === undefined
          ? 'it is not signed by a CA of TLS_CLIENT_CA'
          : certificate.ca || !(certificate.keyUsage ?? []).includes(CLIENT_AUTH_OID)
            ? 'it is not a TLS client certificate (clientAuth)'
            : now > Date.parse(certificate.validTo)
              ? 'it has expired'
              : serialReadsAsCardData(certificate.serialNumber)
                ? 'its serial number reads as a card number, which the audit trail never records; have its CA issue it again (a new random serial)'
                : undefined;
      if (problem !== undefined) {
        throw new AppError('CLIENT_CERTIFICATE_REQUEST_INVALID', { detail: `Certificate refused: ${problem}.` });
      }
      const row: ClientCertificateRow = {
        serial: formatSerial(certificate.serialNumber),
        client_name: input.client,
        scopes: [...new Set(input.scopes)].sort(),
        not_before: new Date(certificate.validFrom),
        not_after: new Date(certificate.validTo),
        fingerprint_sha256: certificateFingerprint(certificate.raw),
        ca_version: null,
        key_source: 'external',
        issued_by: this.deps.actor.actor,
        issued_at: this.now(),
        revoked_at: null,
        revoked_by: null,
        revocation_reason: null,
      };
      if ((await findCertificate(trx, row.serial)) !== undefined) {
        throw new AppError('CLIENT_CERTIFICATE_REQUEST_INVALID', {
          detail: `A certificate with serial ${row.serial} is already recorded.`,
        });
      }
      await this.insertSealed(trx, row);
      await this.audit(trx, 'mtls.certificate.registered', `mtls-client:${input.client}`, {
        serial: row.serial,
        fingerprint: row.fingerprint_sha256,
        scopes: row.scopes,
        notBefore: row.not_before.toISOString(),
        notAfter: row.not_after.toISOString(),
        keySource: 'external',
      });
      return toRecord(row);
    });
  }

  /**
   * Revokes at once: every instance refuses the certificate within MTLS_REVOCATION_CHECK_MS. The
   * revocation is appended to the sealed revocation list (src/mtls/revocation-list.ts), which is what
   * the service trusts; `revoked_at` on the record is for display. Refused, and audited, when the list
   * fails its integrity check: sealing over a tampered list would bless the tampering.
   */
  async revoke(serialInput: string, reason: string): Promise<ClientCertificateRecord> {
    const serial = formatSerial(serialInput);
    return this.guarded('mtls.certificate.revoked', `mtls-certificate:${serial}`, async (trx) => {
      const row = await findCertificate(trx, serial, true);
      if (row === undefined) throw new AppError('CLIENT_CERTIFICATE_NOT_FOUND');
      const sealed = await findRevocation(trx, serial);
      if (sealed !== undefined) {
        throw new AppError('KEY_OPERATION_INVALID', {
          detail: `The certificate was already revoked on ${sealed.revoked_at.toISOString()}.`,
        });
      }
      const cleanReason = reason.trim();
      if (cleanReason.length < 3 || cleanReason.length > 200) {
        throw new AppError('CLIENT_CERTIFICATE_REQUEST_INVALID', { detail: 'The reason must be 3 to 200 characters.' });
      }
      const now = this.now();
      const appended = await appendRevocations(trx, this.deps.masterKey, [
        {
          serial,
          fingerprint: row.fingerprint_sha256,
          revokedAt: now,
          revokedBy: this.deps.actor.actor,
          reason: cleanReason,
        },
      ]);
      if (!appended.ok) {
        throw new AppError('CLIENT_CERTIFICATE_REVOCATIONS_INVALID', {
          detail: `Not revoked: ${appended.problem}. Restore the revocation rows from a backup (keys audit export lists every revocation), then revoke again.`,
        });
      }
      await markCertificateRevoked(trx, serial, {
        revoked_at: now,
        revoked_by: this.deps.actor.actor,
        revocation_reason: cleanReason,
      });
      await bumpRevocationGeneration(trx);
      // The reason is free text: the audit writer refuses it if it holds anything PAN-like.
      await this.audit(trx, 'mtls.certificate.revoked', `mtls-client:${row.client_name}`, {
        serial,
        fingerprint: row.fingerprint_sha256,
        reason: cleanReason,
      });
      return toRecord({ ...row, revoked_at: now, revoked_by: this.deps.actor.actor, revocation_reason: cleanReason });
    });
  }

  /** Revoked means in the sealed list or marked on the record (either is refused by the service). */
  async list(options: { includeRevoked?: boolean } = {}): Promise<ClientCertificateRecord[]> {
    return (await listCertificates(this.deps.knex, options.includeRevoked === true)).map(toRecord);
  }

  /**
   * Appends to the sealed list every certificate whose record says revoked but which is not in it (those
   * revoked before the list existed), audited. Run at start: a revocation only makes things stricter, so
   * taking it from the record is safe. Returns how many were sealed.
   */
  async sealPendingRevocations(): Promise<number> {
    const pending = await revokedUnsealedSerials(this.deps.knex);
    if (pending.length === 0) {
      await this.deps.knex.transaction((trx) => this.sealEmptyRevocationList(trx));
      return 0;
    }
    return this.deps.knex.transaction(async (trx) => {
      // Concurrent starts: the first seals, the others find nothing pending once it commits.
      await lockRevocationHead(trx);
      const rows = await revokedUnsealedRows(trx);
      const appended = await appendRevocations(
        trx,
        this.deps.masterKey,
        rows.map((row) => ({
          serial: row.serial,
          fingerprint: row.fingerprint_sha256,
          revokedAt: row.revoked_at as Date,
          revokedBy: row.revoked_by ?? 'unknown',
          reason: row.revocation_reason ?? 'revoked before sealed revocations',
        })),
      );
      if (!appended.ok) return 0; // the verifier refuses every certificate and audits the detection
      for (const row of rows) {
        await this.audit(trx, 'mtls.certificate.revocation-sealed', `mtls-client:${row.client_name}`, {
          serial: row.serial,
          fingerprint: row.fingerprint_sha256,
        });
      }
      await bumpRevocationGeneration(trx);
      return rows.length;
    });
  }

  /**
   * Seals the empty revocation list head a migration leaves and records it (`mtls.revocations.sealed`):
   * from then on an unsealed head is a reset, refused by every instance (src/mtls/revocation-list.ts).
   */
  private async sealEmptyRevocationList(trx: Knex.Transaction): Promise<void> {
    if (await sealEmptyHead(trx, this.deps.masterKey)) {
      await this.audit(trx, REVOCATIONS_SEALED_ACTION, 'mtls-revocation-list', { length: 0 });
    }
  }

  /** Inserts the grant with its seal: without one the service refuses the certificate. */
  private async insertSealed(trx: Knex.Transaction, row: ClientCertificateRow): Promise<void> {
    const seal = await sealGrant(this.deps.masterKey, grantFieldsOf(toRecord(row)));
    await insertCertificate(trx, row, seal);
  }

  private audit(trx: Knex.Transaction, action: string, resource: string, details: Record<string, unknown>) {
    return appendAuditEvent(trx, { ...this.deps.actor, action, outcome: 'success', resource, details }, this.now());
  }

  /** Runs a write; on a refusal, records it (outcome denied) in a transaction of its own. */
  private guarded<T>(action: string, resource: string, fn: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
    return auditedWrite(this.deps.knex, this.deps.actor, { action, resource }, fn, () => this.now());
  }
}

function clientAndScopeProblems(client: string, scopes: readonly string[]): string[] {
  const problems: string[] = [];
  if (!CLIENT_NAME.test(client)) {
    problems.push('the client name must be 1–64 letters, digits, ".", "_" or "-" (no long digit runs)');
  }
  const unknown = scopes.filter((s) => !(CLIENT_CERTIFICATE_SCOPES as readonly string[]).includes(s));
  if (scopes.length === 0 || unknown.length > 0) {
    problems.push(`scopes must be a non-empty list drawn from ${CLIENT_CERTIFICATE_SCOPES.join(', ')}`);
  }
  return problems;
}

/** Named refusal first: an operator asking for PAN access by certificate is told why, not just "unknown scope". */
function refuseRevealingScopes(scopes: readonly string[]): void {
  const refused = scopes.filter((s) => REFUSED_SCOPES.includes(s));
  if (refused.length > 0) {
    throw new AppError('CLIENT_CERTIFICATE_SCOPE_REFUSED', {
      detail:
        `${refused.join(', ')} cannot be granted to a client certificate: revealing PANs needs dual control, ` +
        'which certificates do not offer. Detokenise clients authenticate with bearer tokens.',
    });
  }
}

function checkClientAndScopes(client: string, scopes: readonly string[]): void {
  refuseRevealingScopes(scopes);
  const problems = clientAndScopeProblems(client, scopes);
  if (problems.length > 0) {
    throw new AppError('CLIENT_CERTIFICATE_REQUEST_INVALID', { detail: `${problems.join('; ')}.` });
  }
}

function checkIssueInput(input: IssueInput): void {
  refuseRevealingScopes(input.scopes);
  const problems = clientAndScopeProblems(input.client, input.scopes);
  if (!Number.isInteger(input.days) || input.days < 1 || input.days > MAX_CLIENT_CERTIFICATE_DAYS) {
    problems.push(`days must be a whole number from 1 to ${MAX_CLIENT_CERTIFICATE_DAYS}`);
  }
  if (input.csrPem === undefined && (input.password === undefined || input.password.length < 12)) {
    problems.push('the bundle password must be at least 12 characters');
  }
  if (problems.length > 0) {
    throw new AppError('CLIENT_CERTIFICATE_REQUEST_INVALID', { detail: `${problems.join('; ')}.` });
  }
}
