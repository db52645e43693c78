/* eslint max-lines: ["error", 625] -- tokenise, attach, lookup and detokenise share batching, rate limits and key-retry plumbing; to split (issue 20) */
/**
 * The card vault: turns card identifiers into permanent tokens and shopper references.
 *
 * - An identifier is looked up by its fingerprint under every readable MAC version, so a MAC key
 *   rotation never breaks a lookup.
 * - A first sighting creates a shopper, a card and the identifier in one transaction, with one
 *   fingerprint row per readable MAC version. Their primary key makes concurrent first sightings
 *   (from any number of instances) end with one card: the loser rolls back and finds the winner.
 * - Tokens and shopper references are random, never derived from card data.
 * - Key versions come from this instance's ring, which may be stale: the database refuses a row under
 *   a version that is no longer writable (migration 20261206000700). Such a refusal reloads the ring
 *   and the write runs once more with the versions chosen again, invisibly to the caller.
 */
import type { Knex } from 'knex';
import { appendAuditEvent, type AuditEventInput } from '../audit/audit-log.js';
import { auditPanRestored, markCardUsed, panPurgedOnRecord, useMarkDue } from './retention-service.js';
import type { Caller } from '../auth/actors.js';
import { GroupCommit } from '../db/group-commit.js';
import { ReadBatcher } from '../db/read-batcher.js';
import { AppError } from '../errors/app-error.js';
import { eventBody } from '../events/event-types.js';
import { newId } from '../ids/prefixed-id.js';
import { INDEXING_STATES, isKeyVersionNotWritable, type KeyRing } from '../keys/key-ring.js';
import { maskPans } from '../logging/pan-redactor.js';
import { consumeRateLimit, countInFixedWindow } from '../ratelimit/rate-limiter.js';
import {
  decryptValue,
  encryptValue,
  fingerprint,
  identifierAad,
  panAad,
  type Identifier,
} from '../crypto/field-crypto.js';
import {
  advanceExpiry,
  findCard,
  findCardByFingerprints,
  findCardsByFingerprintSets,
  insertIdentifier,
  insertNewCards,
  newCardRow,
  isFingerprintTaken,
  moveShopperCards,
  type NewCardSighting,
  setCardPan,
  type CardRow,
  type FingerprintKey,
  type NewIdentifier,
} from './card-store.js';
import { detectBrand, normalisePan, validateExpiry, type Brand, type Expiry } from './pan.js';
import {
  applyCardUpdate,
  withExpiry,
  type CardRef,
  type CardUpdateContext,
  type CardUpdateOutcome,
} from './card-updates.js';

export type { Caller } from '../auth/actors.js';

/** A card as a card-updater event names it: by token, or by an identifier (a PAN with its expiry). */
export type CardUpdateRef = CardInput | { readonly kind: 'token'; readonly token: string };

export interface CardUpdateInput {
  readonly previous: CardUpdateRef;
  readonly next: CardUpdateRef;
  /** The gateway that reported it (audited as `system:webhooks:<source>`). */
  readonly source: string;
  /**
   * The new card's expiry when `next` is not a PAN (a gateway alias carries none of its own). Kept only
   * when it is a plausible month and year: a gateway's odd value is not a reason to refuse its event.
   */
  readonly expiry?: { readonly month: number; readonly year: number };
}

export type CardUpdateResult = Omit<CardUpdateOutcome, 'card'> & { readonly card: CardView | undefined };

export type CardInput =
  | { readonly kind: 'pan'; readonly pan: string; readonly expiryMonth?: number; readonly expiryYear?: number }
  | { readonly kind: 'par'; readonly par: string }
  | { readonly kind: 'alias'; readonly namespace: string; readonly value: string };

export interface CardView {
  readonly token: string;
  readonly shopperReference: string;
  readonly brand: Brand | undefined;
  readonly last4: string | undefined;
  readonly expiryMonth: number | undefined;
  readonly expiryYear: number | undefined;
  readonly createdAt: Date;
}

/** Awaited by tokenise/attach between the lookup and any answer or write; what they throw is thrown. */
export interface SightingHooks {
  /** After the lookup, before any answer or write, whatever was found. */
  readonly beforeAnswer?: () => Promise<void> | void;
  /** When the identifier is unknown, before anything is written. */
  readonly beforeFirstSighting?: () => Promise<void> | void;
}

export interface VaultOptions {
  readonly detokenise: { readonly enabled: boolean; readonly perMinute: number };
  /**
   * Card lookups in flight at once; lookups arriving while that many are running share the next
   * statement (ReadBatcher). Default 4.
   */
  readonly lookupConcurrency?: number;
  /**
   * First-sighting statements in flight at once; new cards arriving while that many are running share
   * the next statement (group commit). Default 4.
   */
  readonly createConcurrency?: number;
  readonly now?: () => Date;
}

const MAX_RACE_RETRIES = 3;
class RaceLost extends Error {}

export class VaultService {
  private readonly now: () => Date;
  /** Lookups by fingerprint outside a transaction, coalesced under load. */
  private readonly lookups: ReadBatcher<readonly FingerprintKey[], CardRow | undefined>;
  /**
   * First sightings, group-committed: concurrent new cards share one statement (atomic by itself, so
   * no transaction around it) and one WAL flush. False for a sighting whose identifier was taken.
   */
  private readonly firstSightings: GroupCommit<NewCardSighting, boolean, Knex>;
  /**
   * This process's first sightings in flight, by identifier: a second one for the same identifier
   * waits for the first and looks again, instead of sending a statement bound to fail (and, shared
   * with other new cards, to make them all run again one by one).
   */
  private readonly sightingsInFlight = new Map<string, Promise<unknown>>();

  constructor(
    private readonly knex: Knex,
    private readonly keyRing: KeyRing,
    private readonly options: VaultOptions,
  ) {
    this.now = options.now ?? (() => new Date());
    this.lookups = new ReadBatcher((sets) => findCardsByFingerprintSets(this.knex, sets), {
      concurrency: options.lookupConcurrency ?? 4,
      maxBatch: 64,
    });
    this.firstSightings = new GroupCommit(
      (work) => work(this.knex),
      async (db, sightings) => {
        try {
          await insertNewCards(db, sightings);
          return sightings.map(() => true);
        } catch (error) {
          // Alone, a taken identifier is a lost race; in a batch it fails the statement, and GroupCommit
          // runs each sighting alone to find which.
          if (sightings.length === 1 && isFingerprintTaken(error)) return [false];
          throw error;
        }
      },
      {
        maxBatch: 64,
        concurrency: options.createConcurrency ?? 4,
        // One identifier never twice in a statement: the second would only collide with the first.
        keyOf: ({ fingerprints }) => sightingKey(fingerprints),
      },
    );
  }

  /**
   * Returns the card for this identifier, creating card and shopper on first sight. `beforeAnswer`
   * runs after the lookup whatever it found, `beforeFirstSighting` when no card is found; both before
   * anything is written or answered. What they throw is thrown, nothing written.
   */
  async tokenise(input: CardInput, hooks: SightingHooks = {}): Promise<{ card: CardView; created: boolean }> {
    const { identifier, expiry } = this.parse(input);
    let keys = await this.fingerprints(identifier);
    let reloaded = false;
    for (let attempt = 0; attempt < MAX_RACE_RETRIES; attempt++) {
      const found = await this.lookups.load(keys);
      await hooks.beforeAnswer?.();
      if (found !== undefined) {
        if (expiry !== undefined && isLater(expiry, found)) {
          await advanceExpiry(this.knex, found.token, expiry.month, expiry.year, this.now());
        }
        // The hot path writes only when the card's last use is over a day old (the row says so).
        if (useMarkDue(found.last_used_at, this.now())) await markCardUsed(this.knex, found.token, this.now());
        return { card: toView(found, expiry), created: false };
      }
      await hooks.beforeFirstSighting?.();
      try {
        const card = await this.createCard(identifier, expiry, keys);
        return { card: toView(card), created: true };
      } catch (error) {
        if (!reloaded && isKeyVersionNotWritable(error)) {
          // Written under a version that stopped being writable: reload, choose again, once.
          reloaded = true;
          await this.keyRing.reloadFresh();
          keys = await this.fingerprints(identifier);
          continue;
        }
        if (!(error instanceof RaceLost)) throw error;
      }
    }
    throw new Error('tokenisation kept losing races; giving up');
  }

  /**
   * The one card that a set of identifiers (best first) names, for a gateway event that carries
   * several (an Adyen PAR and alias, say). The first identifier already known wins; if none is
   * known the first creates the card. The others are attached when nobody owns them yet; one that
   * belongs to another card stays there (joining two shoppers is an explicit merge, never a side
   * effect of a webhook).
   */
  async resolve(inputs: readonly CardInput[], caller: Caller): Promise<CardView> {
    const [first, ...others] = inputs;
    if (first === undefined) throw new Error('resolve needs at least one identifier');
    if (others.length === 0) return (await this.tokenise(first)).card;
    let card: CardView | undefined;
    for (const input of inputs) {
      const found = await this.lookups.load(await this.fingerprints(this.parse(input).identifier));
      if (found !== undefined) {
        card = toView(found);
        break;
      }
    }
    card ??= (await this.tokenise(first)).card;
    for (const input of inputs) {
      try {
        await this.attachIdentifier(card.token, input, caller);
      } catch (error) {
        if (!(
          error instanceof AppError &&
          (error.code === 'IDENTIFIER_ALREADY_LINKED' || error.code === 'CARD_HAS_DIFFERENT_PAN')
        )) {
          throw error;
        }
      }
    }
    return card;
  }

  /**
   * The card an identifier names, or undefined; never creates one. For server code and callers that
   * may already ask this (an admin merging by identifier): it answers whether the identifier is known.
   */
  async lookup(input: CardInput): Promise<CardView | undefined> {
    const found = await this.lookups.load(await this.fingerprints(this.parse(input).identifier));
    return found === undefined ? undefined : toView(found);
  }

  async getCard(token: string, caller: Caller): Promise<CardView> {
    return toView(await this.visibleCard(this.knex, token, caller));
  }

  /**
   * Attaches another identifier (PAR, gateway alias, or the PAN of a PAN-less card) to a card.
   *
   * Membership: a PAN offered for a card that already has a (different) PAN is refused with
   * `CARD_HAS_DIFFERENT_PAN` whether that PAN is known on another card or not, so this refusal never
   * says whether a card number is known here. Otherwise an identifier owned by another card is
   * `IDENTIFIER_ALREADY_LINKED` and an unknown one is attached (201): the same answer as tokenising
   * it, which is why the HTTP layer spends the caller's first-sighting budget before calling this.
   */
  async attachIdentifier(
    token: string,
    input: CardInput,
    caller: Caller,
  ): Promise<{ card: CardView; created: boolean }> {
    const { identifier, expiry } = this.parse(input);
    let keys = await this.fingerprints(identifier);
    let reloaded = false;
    for (let attempt = 0; attempt < MAX_RACE_RETRIES; attempt++) {
      const card = await this.visibleCard(this.knex, token, caller);
      const owner = await findCardByFingerprints(this.knex, keys);
      if (identifier.kind === 'pan' && card.pan_ciphertext !== null) {
        // One refusal for "known elsewhere" and "unknown": only the card's own PAN is answered 200.
        if (owner?.token !== token) throw new AppError('CARD_HAS_DIFFERENT_PAN');
        return { card: toView(card), created: false };
      }
      if (owner !== undefined) {
        // Linking two shoppers is a merge, which is an explicit loyalty operation, never a side effect.
        if (owner.token !== token) throw alreadyLinked(owner.token, card.shopper_ref);
        return { card: toView(card), created: false };
      }
      try {
        await this.knex.transaction(async (trx) => {
          await findCard(trx, token, { forUpdate: true });
          await this.storeIdentifier(trx, token, identifier, keys);
          if (identifier.kind === 'pan') {
            const sealed = await this.sealPan(trx, token, identifier.value);
            const set = await setCardPan(
              trx,
              token,
              {
                ...sealed,
                brand: detectBrand(identifier.value),
                last4: identifier.value.slice(-4),
                expiryMonth: expiry?.month ?? null,
                expiryYear: expiry?.year ?? null,
              },
              this.now(),
            );
            if (!set) throw new RaceLost();
            await auditPanRestored(trx, token, caller, this.now());
          }
        });
        return { card: toView(await this.visibleCard(this.knex, token, caller)), created: true };
      } catch (error) {
        if (!reloaded && isKeyVersionNotWritable(error)) {
          reloaded = true;
          await this.keyRing.reloadFresh();
          keys = await this.fingerprints(identifier);
          continue;
        }
        if (!(error instanceof RaceLost)) throw error;
      }
    }
    throw new Error('attaching an identifier kept losing races; giving up');
  }

  /**
   * Reveals a card's PAN to an authorised client. Off unless configured; limited per client over a
   * sliding minute shared by every instance. Every attempt that reaches here is counted first, in a
   * statement of its own that commits before anything is checked or looked up, so an invalid reason,
   * a disabled vault, unknown tokens, PAN-less cards and the 429 itself all count: a client cannot
   * probe tokens past the limit by only asking for ones that fail.
   *
   * Audit: every attempt within the limit is in the audit trail (allowed, denied or failed; an invalid
   * reason without its text, which may hold what it was refused for). Past the limit, one `denied`
   * entry per client and minute, reporting how many were refused in the minute before: every entry
   * locks the audit chain's head, and one per refused attempt would let a client over its limit
   * serialise every audited operation. The refusals themselves are counted in `rate_limit_windows`.
   */
  async detokenise(token: string, reason: string, caller: Caller): Promise<{ pan: string }> {
    const client = caller.clientKey ?? caller.subject;
    const audit = (outcome: AuditEventInput['outcome'], details: Record<string, unknown>): AuditEventInput => ({
      actor: caller.subject,
      actorType: 'client',
      action: 'card.detokenise',
      outcome,
      origin: caller.origin,
      resource: token,
      details: { ...details, principal: caller.principalKind ?? 'internal' },
    });
    const limit = await consumeRateLimit(this.knex, `detokenise:${client}`, this.options.detokenise.perMinute, 60);
    if (!limit.allowed) {
      const refusals = await countInFixedWindow(this.knex, `detokenise-refused:${client}`, 60);
      if (refusals.count === 1) {
        await this.auditAlone(
          audit('denied', { cause: 'TOO_MANY_REQUESTS', refusedInPreviousMinute: refusals.previous }),
        );
      }
      throw new AppError('TOO_MANY_REQUESTS', {
        detail: 'Detokenisation rate limit reached for this client.',
        headers: { 'Retry-After': String(limit.retryAfterSeconds) },
      });
    }
    if (maskPans(reason) !== reason || reason.trim().length < 3) {
      await this.auditAlone(audit('failure', { cause: 'REASON_INVALID' }));
      throw new AppError('REASON_INVALID', { detail: 'Give a reason of at least 3 characters, without card numbers.' });
    }
    if (!this.options.detokenise.enabled || caller.shopperRef !== undefined) {
      await this.auditAlone(audit('denied', { reason, cause: 'disabled' }));
      throw new AppError('DETOKENISATION_DISABLED');
    }
    try {
      return await this.knex.transaction(async (trx) => {
        const card = await this.visibleCard(trx, token, caller);
        // Purged at the end of its retention period, by its mark or the audited list (retention-service.ts).
        if (card.pan_purged_at != null || (await panPurgedOnRecord(trx, token))) throw new AppError('CARD_PAN_PURGED');
        if (card.pan_ciphertext === null || card.pan_key_version === null) throw new AppError('CARD_HAS_NO_PAN');
        const key = await this.keyRing.version('pan-encryption', card.pan_key_version, trx);
        const pan = decryptValue(key.key, panAad(card.token, card.pan_key_version), card.pan_ciphertext);
        await appendAuditEvent(trx, audit('success', { reason, keyVersion: card.pan_key_version }), this.now());
        if (useMarkDue(card.last_used_at, this.now())) await markCardUsed(trx, token, this.now());
        return { pan };
      });
    } catch (error) {
      if (error instanceof AppError) await this.auditAlone(audit('failure', { reason, cause: error.code }));
      throw error;
    }
  }

  /**
   * A card-updater event: `next` replaces `previous` (card-updates.ts says how). Idempotent by state:
   * a redelivery changes nothing and audits nothing. Refused key versions reload the ring once.
   */
  async updateCard(update: CardUpdateInput): Promise<CardUpdateResult> {
    const ref = (input: CardUpdateRef): CardRef => {
      if (input.kind === 'token') return input;
      const { identifier, expiry } = this.parse(input);
      return { kind: 'identifier', identifier, expiry };
    };
    const previous = ref(update.previous);
    const next = withExpiry(ref(update.next), update.expiry);
    const context = (): CardUpdateContext => ({
      knex: this.knex,
      now: this.now(),
      actor: `system:webhooks:${update.source}`,
      fingerprints: (identifier) => this.fingerprints(identifier),
      sealIdentifier: (trx, token, identifier) => this.sealIdentifier(trx, token, identifier),
      sealPan: (trx, token, pan) => this.sealPan(trx, token, pan),
    });
    let outcome: CardUpdateOutcome;
    try {
      outcome = await applyCardUpdate(context(), previous, next);
    } catch (error) {
      if (!isKeyVersionNotWritable(error)) throw error;
      await this.keyRing.reloadFresh();
      outcome = await applyCardUpdate(context(), previous, next);
    }
    return { ...outcome, card: outcome.card === undefined ? undefined : toView(outcome.card) };
  }

  /** The shopper a card belongs to, read on the caller's transaction; undefined for an unknown token. */
  async ownerOf(db: Knex | Knex.Transaction, token: string): Promise<string | undefined> {
    return (await findCard(db, token))?.shopper_ref;
  }

  /**
   * Moves every card of one shopper to another (a loyalty merge), in the caller's transaction.
   * Tokens never change; only the shopper they belong to.
   */
  async moveCards(trx: Knex.Transaction, fromShopper: string, toShopper: string): Promise<number> {
    return moveShopperCards(trx, fromShopper, toShopper, this.now());
  }

  private parse(input: CardInput): { identifier: Identifier; expiry: Expiry | undefined } {
    switch (input.kind) {
      case 'pan':
        return {
          identifier: { kind: 'pan', value: normalisePan(input.pan) },
          expiry: validateExpiry(input.expiryMonth, input.expiryYear, this.now()),
        };
      case 'par':
        return { identifier: { kind: 'par', value: input.par }, expiry: undefined };
      case 'alias':
        return { identifier: { kind: 'alias', namespace: input.namespace, value: input.value }, expiry: undefined };
    }
  }

  /**
   * Whether these digits are the PAN of a card in this vault: its fingerprint under every readable MAC
   * version, looked up like any identifier. Answers a yes/no to server code only (an Adyen reference
   * that is a known card number is rejected, adyen-events.ts); never exposed to a caller.
   */
  async isKnownPan(digits: string): Promise<boolean> {
    if (!/^[0-9]{12,19}$/.test(digits)) return false;
    const keys = await this.fingerprints({ kind: 'pan', value: normalisePan(digits) });
    return (await findCardByFingerprints(this.knex, keys)) !== undefined;
  }

  private async fingerprints(identifier: Identifier): Promise<FingerprintKey[]> {
    const keys = await this.keyRing.readable('identifier-mac');
    return keys.map((k) => ({
      version: k.version,
      fingerprint: fingerprint(k.key, identifier),
      indexing: INDEXING_STATES.includes(k.state),
    }));
  }

  /**
   * The first sighting: shopper, card, identifier and fingerprints in one atomic statement, shared
   * with the concurrent first sightings of other cards.
   */
  private async createCard(
    identifier: Identifier,
    expiry: Expiry | undefined,
    keys: readonly FingerprintKey[],
  ): Promise<CardRow> {
    const key = sightingKey(keys);
    const ahead = this.sightingsInFlight.get(key);
    if (ahead !== undefined) {
      await ahead.catch(() => undefined);
      throw new RaceLost();
    }
    const sighting = this.insertCard(identifier, expiry, keys);
    this.sightingsInFlight.set(key, sighting);
    try {
      return await sighting;
    } finally {
      this.sightingsInFlight.delete(key);
    }
  }

  private async insertCard(
    identifier: Identifier,
    expiry: Expiry | undefined,
    keys: readonly FingerprintKey[],
  ): Promise<CardRow> {
    const now = this.now();
    const shopperRef = newId('shp');
    const token = newId('tok');
    const isPan = identifier.kind === 'pan';
    const sealed = isPan ? await this.sealPan(this.knex, token, identifier.value) : undefined;
    const card = {
      token,
      shopperRef,
      brand: isPan ? detectBrand(identifier.value) : null,
      last4: isPan ? identifier.value.slice(-4) : null,
      expiryMonth: expiry?.month ?? null,
      expiryYear: expiry?.year ?? null,
      panCiphertext: sealed?.ciphertext ?? null,
      panKeyVersion: sealed?.keyVersion ?? null,
    };
    const stored = await this.firstSightings.submit({
      card,
      identifier: await this.sealIdentifier(this.knex, token, identifier),
      fingerprints: keys,
      events: [eventBody('shopper.created', `shopper:${shopperRef}:created`, shopperRef, { cardToken: token }, now)],
      now,
    });
    if (!stored) throw new RaceLost();
    return newCardRow(card, now);
  }

  /** The identifier row: PAR and alias values kept encrypted, so a MAC rotation can re-derive them. */
  private async sealIdentifier(
    db: Knex | Knex.Transaction,
    token: string,
    identifier: Identifier,
  ): Promise<NewIdentifier> {
    const id = newId('cid');
    if (identifier.kind === 'pan') {
      return { id, token, kind: 'pan', namespace: null, valueCiphertext: null, valueKeyVersion: null };
    }
    const key = await this.keyRing.active('pan-encryption', db);
    return {
      id,
      token,
      kind: identifier.kind,
      namespace: identifier.namespace ?? null,
      valueCiphertext: encryptValue(key.key, identifierAad(id, key.version), identifier.value),
      valueKeyVersion: key.version,
    };
  }

  private async storeIdentifier(
    trx: Knex.Transaction,
    token: string,
    identifier: Identifier,
    keys: readonly FingerprintKey[],
  ): Promise<void> {
    const stored = await insertIdentifier(trx, await this.sealIdentifier(trx, token, identifier), keys, this.now());
    if (!stored) throw new RaceLost();
  }

  private async sealPan(
    trx: Knex | Knex.Transaction,
    token: string,
    pan: string,
  ): Promise<{ ciphertext: Buffer; keyVersion: number }> {
    const key = await this.keyRing.active('pan-encryption', trx);
    return { ciphertext: encryptValue(key.key, panAad(token, key.version), pan), keyVersion: key.version };
  }

  /** A card the caller may see. A shopper token asking for another shopper's card gets 404, not 403. */
  private async visibleCard(db: Knex | Knex.Transaction, token: string, caller: Caller): Promise<CardRow> {
    const card = await findCard(db, token);
    if (card === undefined || (caller.shopperRef !== undefined && card.shopper_ref !== caller.shopperRef)) {
      throw new AppError('NOT_FOUND', { detail: 'No such card token.' });
    }
    return card;
  }

  private async auditAlone(event: AuditEventInput): Promise<void> {
    await this.knex.transaction((trx) => appendAuditEvent(trx, event, this.now()));
  }
}

/**
 * `409 IDENTIFIER_ALREADY_LINKED` with the way forward (problem+json extensions, openapi.yaml
 * `IdentifierLinkedProblem`): the token of the card that holds the identifier and the merge that joins
 * its shopper to this card's. Only `tokens:write` clients attach identifiers (shopper tokens are refused
 * before this), and they may learn the same token by tokenising that identifier (`POST /v1/tokens`), so
 * the token tells them nothing new; the other card's shopper is not named.
 */
function alreadyLinked(otherToken: string, shopperRef: string): AppError {
  return new AppError('IDENTIFIER_ALREADY_LINKED', {
    detail: 'The identifier belongs to another card; merge that card into this shopper to join them.',
    extensions: {
      cardToken: otherToken,
      merge: { method: 'POST', href: `/v1/shoppers/${shopperRef}/cards`, body: { token: otherToken } },
    },
  });
}

function isLater(expiry: Expiry, card: CardRow): boolean {
  return (
    card.expiry_year === null ||
    card.expiry_month === null ||
    expiry.year * 12 + expiry.month > card.expiry_year * 12 + card.expiry_month
  );
}

function toView(row: CardRow, newerExpiry?: Expiry): CardView {
  let month = row.expiry_month ?? undefined;
  let year = row.expiry_year ?? undefined;
  if (
    newerExpiry !== undefined &&
    (year === undefined || month === undefined || year * 12 + month < newerExpiry.year * 12 + newerExpiry.month)
  ) {
    month = newerExpiry.month;
    year = newerExpiry.year;
  }
  return {
    token: row.token,
    shopperReference: row.shopper_ref,
    brand: row.brand ?? undefined,
    last4: row.last4 ?? undefined,
    expiryMonth: month,
    expiryYear: year,
    createdAt: row.created_at,
  };
}

/** A first sighting's identity: its fingerprints under the indexing MAC versions. */
function sightingKey(fingerprints: readonly FingerprintKey[]): string {
  return fingerprints
    .filter((f) => f.indexing)
    .map((f) => `${f.version}:${f.fingerprint.toString('base64')}`)
    .join(' ');
}
