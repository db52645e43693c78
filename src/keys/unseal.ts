/* eslint max-lines: ["error", 440] -- one protocol: per-seal nonce and instance key, signed submissions, the refusal journal, the rebuild; kept together so its invariants read in one place */
/**
 * Unsealing one running instance: custodians submit their shares one at a time until the threshold
 * is reached; the key is rebuilt in memory, checked, and the vault opens. Sealing forgets it again.
 *
 * How a share reaches an instance (the shape of Vault's `sys/unseal`, made safe to replay and to log):
 * 1. The custodian's CLI (`keys unseal --url …`) reads `GET /v1/admin/unseal`: this instance's
 *    per-seal nonce and its ephemeral X25519 public key (both made fresh at start and at every seal,
 *    held only in this process).
 * 2. The CLI opens the custodian's share file with their private key, locally, and encrypts the share
 *    to the instance's ephemeral key, bound to the nonce and the custodian (share-crypto.ts).
 * 3. It signs `{type, nonce, splitId, share envelope}` as a compact JWS (EdDSA) with the custodian's
 *    key and posts it to `POST /v1/admin/unseal`.
 *
 * Against whom:
 * - **Someone replaying a captured submission**: within the same seal it is the same custodian again,
 *   refused `UNSEAL_SHARE_DUPLICATE`; after a seal or a restart the nonce differs (`UNSEAL_NONCE_STALE`)
 *   and the envelope is for an ephemeral key that no longer exists; on another instance the nonce and
 *   key are that instance's own. Every refusal is audited.
 * - **Someone reading logs, a TLS-terminating proxy or the request body**: it holds the share only
 *   encrypted to a key that lives in this process's memory until the next seal.
 * - **One custodian acting alone**: their one share rebuilds nothing (Shamir, threshold ≥ 2), and a
 *   second submission of theirs is refused: M distinct custodians are needed.
 * - **An insider with database write access** (the service is sealed, so it cannot check seals yet):
 *   may change the split record (holders' keys, digests, threshold) or the custodian rows. The rebuilt
 *   key must carry the pinned MASTER_KEY_SHARES_KEY_ID; then, under that key, the split record's seal
 *   and every submitter's custodian seal must verify; anything else seals again and is audited. A
 *   substituted holder key lets its owner submit, but their "share" does not rebuild the pinned key.
 *   What they can do is deny service (alter a digest so a genuine share is refused) — visible as
 *   refusals in the trail once unsealed, and in the logs before.
 *
 * The audit trail is MAC'd under a key the master key unwraps (src/audit/audit-chain-keys.ts), so a
 * sealed instance cannot append to it: every submission, accepted or refused, is logged at once (who,
 * outcome, code — never the share) and kept in this process's journal, which is appended to the trail
 * in the same transaction as `vault.unsealed`. Submissions to an instance that is never unsealed reach
 * the logs only (docs/key-management.md says so). The journal is bounded; what it drops is counted.
 */
import { createHash, generateKeyPairSync, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import { compactVerify, importJWK } from 'jose';
import type { Knex } from 'knex';
import { combine } from 'shamir-secret-sharing';
import type { AuditEventInput } from '../audit/audit-chain.js';
import { appendAuditEvent } from '../audit/audit-log.js';
import { AppError, type ErrorCode } from '../errors/app-error.js';
import { verifyRegister } from './custodian-provenance.js';
import { activeSplit, verifySplitSeal, type SplitRecord } from './key-shares.js';
import {
  isEnvelope,
  openEnvelope,
  rawX25519Public,
  shareDigest,
  SHARE_BYTES,
  type Envelope,
} from './master-key-sources/share-crypto.js';
import type { SharesMasterKey } from './master-key-sources/shares.js';
import { safeKid } from './request-payload.js';

export const UNSEAL_JWS_TYP = 'loyalty-vault-unseal+jwt';
export const SEAL_JWS_TYP = 'loyalty-vault-seal+jwt';
export const UNSEAL_PAYLOAD_TYPE = 'loyalty-vault/unseal-share/v1';
export const SEAL_PAYLOAD_TYPE = 'loyalty-vault/seal/v1';
const JOURNAL_MAX = 200;
/** Whoever sent a submission whose signature did not verify. */
const STRANGER = { actor: 'unknown', thumbprint: null } as const;

/** The context a share sent to an instance is encrypted under (HKDF info and GCM AAD). */
export const instanceShareContext = (nonce: string, thumbprint: string): string =>
  `master-key-share/instance|${nonce}|${thumbprint}`;

/**
 * What a custodian compares before sending a share: the fingerprint of the instance's ephemeral key
 * (`SHA256:` and the first 22 base64url characters of the SHA-256 of its raw bytes; prefixed as ssh
 * prefixes its fingerprints, which also keeps one from starting with `-`, which an option parser
 * would read as an option). The status that carries the key is not
 * authenticated (a sealed instance has no key to sign it with), so whoever sits between the CLI and
 * the instance (a TLS-terminating proxy, plain HTTP) could hand out a key of their own and open the
 * share. The instance logs the fingerprint at every seal; `keys unseal --instance-key` pins it.
 */
export const instanceKeyFingerprint = (instanceKey: string): string =>
  `SHA256:${createHash('sha256').update(Buffer.from(instanceKey, 'base64url')).digest('base64url').slice(0, 22)}`;

export interface UnsealStatus {
  readonly sealed: boolean;
  /** This seal's nonce: every submission and seal request must name it. */
  readonly nonce: string;
  /** The instance's ephemeral X25519 public key (base64url) that shares are encrypted to; null when unsealed. */
  readonly instanceKey: string | null;
  readonly splitId: string | null;
  readonly threshold: number | null;
  readonly total: number | null;
  /** Shares accepted towards the threshold since the last seal. */
  readonly progress: number;
}

export interface UnsealerDeps {
  readonly knex: Knex;
  readonly source: SharesMasterKey;
  /** Runs once the key is rebuilt and checked: loads the key ring and starts what needs keys. */
  readonly onUnsealed: () => Promise<void>;
  /** Runs before the key is forgotten: stops what needs keys and drops the unwrapped data keys. */
  readonly onSealing: () => Promise<void>;
  /** Logs one line per submission (fields never hold a share). */
  readonly log: (fields: Record<string, unknown>, message: string) => void;
}

interface Accepted {
  readonly name: string;
  readonly share: Uint8Array;
}

export class Unsealer {
  private nonce = '';
  private ephemeral: KeyObject | undefined;
  private instanceKey: string | null = null;
  private accepted = new Map<string, Accepted>();
  private journal: AuditEventInput[] = [];
  /** The details of each refusal entry in the journal, by submitter, action and code (counted). */
  private repeats = new Map<string, { count: number }>();
  /** Digests of stale seal requests already audited (a replay of one is logged only). */
  private staleSeals = new Set<string>();
  private dropped = 0;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: UnsealerDeps) {
    this.freshSeal();
  }

  async status(): Promise<UnsealStatus> {
    const split = await activeSplit(this.deps.knex);
    return {
      sealed: this.deps.source.sealed,
      nonce: this.nonce,
      instanceKey: this.deps.source.sealed ? this.instanceKey : null,
      splitId: split?.id ?? null,
      threshold: split?.threshold ?? null,
      total: split?.total ?? null,
      progress: this.accepted.size,
    };
  }

  /** One custodian's signed share. Submissions run one at a time. */
  submit(jws: string, origin: string): Promise<UnsealStatus> {
    const run = this.queue.then(() => this.submitNow(jws, origin));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** A custodian's signed request to seal this instance (any one custodian may: a fail-safe). */
  seal(jws: string, origin: string): Promise<UnsealStatus> {
    const run = this.queue.then(() => this.sealNow(jws, origin));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async submitNow(jws: string, origin: string): Promise<UnsealStatus> {
    if (!this.deps.source.sealed) throw new AppError('VAULT_NOT_SEALED');
    const split = await activeSplit(this.deps.knex);
    if (split === undefined) {
      throw new AppError('MASTER_KEY_SPLIT_MISSING', { detail: 'No active split: run keys shares split first.' });
    }
    const kid = safeKid(jws);
    const holder = split.holders.find((h) => h.keyThumbprint === kid);
    // Until the signature verifies, the submitter is a stranger: the kid is theirs to choose (it could
    // name a custodian, to have the trail blame them, or read as a card number, which the audit trail
    // refuses: one such entry in the journal made every later unseal fail). Nothing of it is kept.
    let who: { actor: string; thumbprint: string | null } = STRANGER;
    const refuse = (code: ErrorCode, detail: string): never => {
      this.record(origin, who, 'failure', { code, splitId: split.id });
      throw new AppError(code, { detail });
    };
    if (holder === undefined)
      return refuse('UNSEAL_SUBMISSION_INVALID', 'The signing key holds no share of the active split.');
    const payload = await verifySigned(jws, holder.x, UNSEAL_JWS_TYP);
    if (payload === undefined || payload['type'] !== UNSEAL_PAYLOAD_TYPE || !isEnvelope(payload['share'])) {
      return refuse('UNSEAL_SUBMISSION_INVALID', 'The submission is not an unseal request signed by this custodian.');
    }
    who = { actor: holder.name, thumbprint: holder.keyThumbprint };
    if (payload['nonce'] !== this.nonce) {
      return refuse(
        'UNSEAL_NONCE_STALE',
        'The submission names another seal (replayed, or made before a seal or restart): read the status again.',
      );
    }
    if (payload['splitId'] !== split.id) {
      return refuse('UNSEAL_SHARE_REFUSED', 'The share belongs to another (superseded) split.');
    }
    if (this.accepted.has(holder.keyThumbprint)) {
      return refuse('UNSEAL_SHARE_DUPLICATE', 'This custodian has submitted a share since the last seal.');
    }
    let share: Buffer;
    try {
      share = openEnvelope(
        this.ephemeral!,
        payload['share'] as Envelope,
        instanceShareContext(this.nonce, holder.keyThumbprint),
      );
    } catch {
      return refuse('UNSEAL_SHARE_REFUSED', 'The share was not encrypted to this instance for this seal.');
    }
    const digest = Buffer.from(shareDigest(split.id, holder.keyThumbprint, share));
    const expected = Buffer.from(holder.digest);
    if (
      share.length !== SHARE_BYTES ||
      digest.length !== expected.length ||
      !timingSafeEqual(digest, expected) ||
      share[SHARE_BYTES - 1] !== holder.index
    ) {
      share.fill(0);
      return refuse('UNSEAL_SHARE_REFUSED', 'The share is not the one this custodian holds in the active split.');
    }
    // A plain Uint8Array (the library refuses Buffer subclasses); the Buffer is wiped.
    this.accepted.set(holder.keyThumbprint, { name: holder.name, share: Uint8Array.from(share) });
    share.fill(0);
    this.record(origin, who, 'success', {
      splitId: split.id,
      progress: this.accepted.size,
      threshold: split.threshold,
    });
    if (this.accepted.size >= split.threshold) await this.rebuild(split, origin);
    return this.status();
  }

  /** M shares are in: combine, check against the pin, the split seal and the register, then open. */
  private async rebuild(split: SplitRecord & { seal: Buffer }, origin: string): Promise<void> {
    const submitters = [...this.accepted.entries()];
    const shares = submitters.map(([, a]) => a.share);
    this.accepted = new Map();
    let installed = false;
    try {
      // combine throws on shares it cannot interpolate (two with one x coordinate: a holder record an
      // insider altered); that is a key that does not rebuild, refused and audited like any other.
      const secret = await combine(shares).catch(() => undefined);
      if (secret !== undefined) {
        installed = this.deps.source.install(secret);
        secret.fill(0);
      }
    } finally {
      for (const share of shares) share.fill(0);
    }
    const fail = (detail: string): never => {
      this.deps.source.seal();
      // A new nonce and ephemeral key: the submissions of this attempt, captured on the way, must not
      // complete a later one (an insider puts the record back, a network attacker replays them).
      this.freshSeal();
      this.record(
        origin,
        { actor: 'system', thumbprint: null },
        'failure',
        {
          code: 'UNSEAL_KEY_MISMATCH',
          splitId: split.id,
          submittedBy: submitters.map(([t, a]) => ({ custodian: a.name, keyThumbprint: t })),
          reason: detail,
        },
        'vault.unseal.refused',
      );
      throw new AppError('UNSEAL_KEY_MISMATCH', { detail: `${detail} The submissions are discarded: start again.` });
    };
    if (!installed)
      return fail('The shares rebuild a key other than MASTER_KEY_SHARES_KEY_ID (a holder key or digest was altered).');
    if (!(await verifySplitSeal(this.deps.source, split)))
      return fail('The split record does not match its seal (altered).');
    const register = await verifyRegister(this.deps.knex, this.deps.source);
    const strangers = submitters.filter(([t]) => register.tampered !== undefined || !register.trusted.has(t));
    if (strangers.length > 0) return fail('A submitter is not a registered custodian.');
    const journal = this.journal;
    const dropped = this.dropped;
    try {
      await this.deps.onUnsealed();
      // Fail closed: an unseal the audit trail does not record does not stand.
      await this.deps.knex.transaction(async (trx) => {
        for (const entry of journal) await appendAuditEvent(trx, entry);
        await appendAuditEvent(trx, {
          actor: 'system',
          actorType: 'system',
          action: 'vault.unsealed',
          outcome: 'success',
          origin,
          resource: `master-key:${this.deps.source.keyId}`,
          details: {
            splitId: split.id,
            threshold: split.threshold,
            submittedBy: submitters.map(([t, a]) => ({ custodian: a.name, keyThumbprint: t })),
            journalDropped: dropped,
          },
        });
      });
    } catch (error) {
      await this.sealLocally().catch(() => this.deps.source.seal());
      throw error;
    }
    this.journal = [];
    this.repeats = new Map();
    this.dropped = 0;
    this.deps.log({ splitId: split.id, submittedBy: submitters.map(([, a]) => a.name) }, 'vault unsealed');
    // The nonce moves on: a seal request must be made for this unsealed period.
    this.nonce = randomBytes(24).toString('base64url');
    this.ephemeral = undefined;
    this.instanceKey = null;
  }

  private async sealNow(jws: string, origin: string): Promise<UnsealStatus> {
    if (this.deps.source.sealed) return this.status();
    const register = await verifyRegister(this.deps.knex, this.deps.source);
    const kid = safeKid(jws);
    const custodian = kid === undefined || register.tampered !== undefined ? undefined : register.trusted.get(kid);
    const payload =
      custodian === undefined ? undefined : await verifySigned(jws, String(custodian.publicKeyJwk.x), SEAL_JWS_TYP);
    const ok = payload !== undefined && payload['type'] === SEAL_PAYLOAD_TYPE && payload['nonce'] === this.nonce;
    if (custodian === undefined || payload === undefined) {
      // Signed by no custodian: logged, not audited. The endpoint needs no bearer token, so an audit
      // entry per request would let anyone append to the trail (and hold its head lock) at will.
      this.deps.log({ action: 'vault.sealed', outcome: 'failure', code: 'UNSEAL_SUBMISSION_INVALID' }, 'seal request');
      throw new AppError('UNSEAL_SUBMISSION_INVALID', {
        detail: 'The seal request is not signed by a registered custodian.',
      });
    }
    if (!ok) {
      // A captured seal request replayed (its nonce is stale): audited once, then only logged, so
      // that one capture does not let anyone append to the trail at will.
      const digest = createHash('sha256').update(jws).digest('base64url');
      if (this.staleSeals.has(digest)) {
        this.deps.log({ custodian: custodian.name, code: 'UNSEAL_NONCE_STALE', repeated: true }, 'seal request');
        throw new AppError('UNSEAL_NONCE_STALE', {
          detail: 'The seal request names another nonce: read the status again.',
        });
      }
      if (this.staleSeals.size >= JOURNAL_MAX) this.staleSeals.clear();
      this.staleSeals.add(digest);
    }
    await this.deps.knex.transaction((trx) =>
      appendAuditEvent(trx, {
        actor: custodian.name,
        actorType: 'custodian',
        action: 'vault.sealed',
        outcome: ok ? 'success' : 'failure',
        origin,
        resource: `master-key:${this.deps.source.keyId}`,
        details: ok ? { keyThumbprint: custodian.keyThumbprint } : { code: 'UNSEAL_NONCE_STALE' },
      }),
    );
    if (!ok) {
      throw new AppError('UNSEAL_NONCE_STALE', {
        detail: 'The seal request names another nonce: read the status again.',
      });
    }
    await this.sealLocally();
    this.deps.log({ custodian: custodian.name }, 'vault sealed');
    return this.status();
  }

  /** Seals without a request (shutdown, a failed check): stops what needs keys, forgets the key. */
  async sealLocally(): Promise<void> {
    await this.deps.onSealing();
    this.deps.source.seal();
    this.freshSeal();
  }

  private freshSeal(): void {
    for (const a of this.accepted.values()) a.share.fill(0);
    this.accepted = new Map();
    this.nonce = randomBytes(24).toString('base64url');
    const pair = generateKeyPairSync('x25519');
    this.ephemeral = pair.privateKey;
    this.instanceKey = rawX25519Public(pair.publicKey).toString('base64url');
    this.deps.log(
      { instanceKeyFingerprint: instanceKeyFingerprint(this.instanceKey) },
      'sealed: custodians compare this instance key fingerprint with the one keys unseal prints (--instance-key)',
    );
  }

  private record(
    origin: string,
    who: { actor: string; thumbprint: string | null },
    outcome: 'success' | 'failure',
    details: Record<string, unknown>,
    action = 'vault.unseal.share-submitted',
  ): void {
    this.deps.log(
      { custodian: who.actor, keyThumbprint: who.thumbprint, action, outcome, ...details },
      'unseal submission',
    );
    // Refusals repeat (a flood by strangers, a captured submission replayed): one entry per submitter,
    // action and code, with a count, so that a flood cannot push the custodians' own entries out.
    const key = `${who.thumbprint ?? who.actor}|${action}|${String(details['code'])}`;
    const seen = outcome === 'failure' ? this.repeats.get(key) : undefined;
    if (seen !== undefined) {
      seen.count += 1;
      return;
    }
    const entryDetails = { keyThumbprint: who.thumbprint, ...details, ...(outcome === 'failure' ? { count: 1 } : {}) };
    if (this.journal.length >= JOURNAL_MAX) {
      this.dropped += 1;
      return;
    }
    if (outcome === 'failure') this.repeats.set(key, entryDetails as { count: number });
    this.journal.push({
      actor: who.actor,
      // A stranger is no custodian: an unauthenticated client of the unseal endpoint.
      actorType: who === STRANGER ? 'client' : who.actor === 'system' ? 'system' : 'custodian',
      action,
      outcome,
      origin,
      resource: `master-key:${this.deps.source.keyId}`,
      details: entryDetails,
    });
  }
}

async function verifySigned(jws: string, x: string, typ: string): Promise<Record<string, unknown> | undefined> {
  try {
    const key = await importJWK({ kty: 'OKP', crv: 'Ed25519', x }, 'EdDSA');
    const verified = await compactVerify(jws, key, { algorithms: ['EdDSA'] });
    if (verified.protectedHeader.typ !== typ) return undefined;
    const value: unknown = JSON.parse(new TextDecoder().decode(verified.payload));
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
