/**
 * Card-updater events (a reissued card, a new number, a new expiry), applied to the vault: the new
 * card is linked to the old card's shopper and the old card is marked replaced (`cards.replaced_by`),
 * audited (`card.replaced`). Used by VaultService.updateCard; the gateways' adapters say which card was
 * replaced by which (by token, PAR, PAN or gateway alias).
 *
 * - An expiry change is not a new card: fingerprints are computed over the identifier alone (never its
 *   expiry), so the "new" card is found to be the old one and only its expiry moves forward.
 * - Idempotent by state, not by memory: a redelivery finds the old card already replaced by the new one
 *   (or the new card already on the shopper) and writes nothing, audits nothing; any instance, any time.
 * - Never a merge: a new card that already belongs to **another** shopper is not moved (joining two
 *   shoppers is the explicit, audited merge, `POST /v1/shoppers/{ref}/cards`); the event is stored
 *   `failed` with `CARD_UPDATE_OTHER_SHOPPER` for an operator to merge.
 * - An update naming an old card this vault does not know is stored `ignored` (`CARD_UPDATE_UNKNOWN_CARD`):
 *   nothing is created from it (a first sighting is a payment's business).
 */
import type { Knex } from 'knex';
import { appendAuditEvent } from '../audit/audit-log.js';
import type { Identifier } from '../crypto/field-crypto.js';
import { newId } from '../ids/prefixed-id.js';
import {
  advanceExpiry,
  findCard,
  findCardByFingerprints,
  insertCardForShopper,
  markReplaced,
  type CardRow,
  type FingerprintKey,
  type NewIdentifier,
} from './card-store.js';
import { detectBrand, type Expiry } from './pan.js';

/** A card as a card-updater event names it. */
export type CardRef =
  | { readonly kind: 'token'; readonly token: string }
  | { readonly kind: 'identifier'; readonly identifier: Identifier; readonly expiry: Expiry | undefined };

export interface CardUpdateOutcome {
  readonly state: 'applied' | 'ignored' | 'failed';
  readonly errorCode: string | null;
  /** The card now in use (the new one, or the old one when only its expiry changed). */
  readonly card: CardRow | undefined;
  /** What this call changed: nothing (a redelivery), an expiry, or a replacement. */
  readonly change: 'none' | 'expiry' | 'replaced';
}

export interface CardUpdateContext {
  readonly knex: Knex;
  readonly now: Date;
  /** Audit actor: `system:webhooks:<provider>`. */
  readonly actor: string;
  fingerprints(identifier: Identifier): Promise<FingerprintKey[]>;
  sealIdentifier(db: Knex.Transaction, token: string, identifier: Identifier): Promise<NewIdentifier>;
  sealPan(db: Knex.Transaction, token: string, pan: string): Promise<{ ciphertext: Buffer; keyVersion: number }>;
}

class RaceLost extends Error {}

/**
 * The new card's expiry from the event when its identifier carries none (a gateway alias), kept only
 * when it is a plausible month and year: a gateway's odd value is no reason to refuse its event.
 */
export function withExpiry(
  ref: CardRef,
  given: { readonly month: number; readonly year: number } | undefined,
): CardRef {
  if (ref.kind !== 'identifier' || ref.expiry !== undefined || given === undefined) return ref;
  const { month, year } = given;
  const plausible = Number.isInteger(month) && month >= 1 && month <= 12 && Number.isInteger(year);
  return plausible && year >= 2000 && year <= 2100 ? { ...ref, expiry: { month, year } } : ref;
}

export async function applyCardUpdate(
  ctx: CardUpdateContext,
  previous: CardRef,
  next: CardRef,
): Promise<CardUpdateOutcome> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await attemptUpdate(ctx, previous, next);
    } catch (error) {
      if (!(error instanceof RaceLost)) throw error;
    }
  }
  throw new Error('a card update kept losing races; giving up');
}

async function attemptUpdate(ctx: CardUpdateContext, previous: CardRef, next: CardRef): Promise<CardUpdateOutcome> {
  const old = await cardOf(ctx, previous);
  if (old === undefined)
    return { state: 'ignored', errorCode: 'CARD_UPDATE_UNKNOWN_CARD', card: undefined, change: 'none' };
  const keys = next.kind === 'identifier' ? await ctx.fingerprints(next.identifier) : [];
  const found =
    next.kind === 'token' ? await findCard(ctx.knex, next.token) : await findCardByFingerprints(ctx.knex, keys);
  const expiry = next.kind === 'identifier' ? next.expiry : undefined;
  if (found?.token === old.token) {
    // The same card (same identifier, fingerprints ignore expiry): at most a later expiry.
    const later = expiry !== undefined && isLater(expiry, old);
    if (later) await advanceExpiry(ctx.knex, old.token, expiry.month, expiry.year, ctx.now);
    return { state: 'applied', errorCode: null, card: old, change: later ? 'expiry' : 'none' };
  }
  if (found !== undefined && found.shopper_ref !== old.shopper_ref) {
    return { state: 'failed', errorCode: 'CARD_UPDATE_OTHER_SHOPPER', card: found, change: 'none' };
  }
  if (found === undefined && next.kind === 'token') {
    return { state: 'ignored', errorCode: 'CARD_UPDATE_UNKNOWN_CARD', card: undefined, change: 'none' };
  }
  return ctx.knex.transaction(async (trx) => {
    const locked = await findCard(trx, old.token, { forUpdate: true });
    if (locked === undefined || locked.shopper_ref !== old.shopper_ref) throw new RaceLost();
    let card = found;
    if (card === undefined && next.kind === 'identifier') {
      card = await createOnShopper(ctx, trx, old.shopper_ref, next.identifier, next.expiry, keys);
    }
    const replacement = card as CardRow;
    if (expiry !== undefined && isLater(expiry, replacement)) {
      await advanceExpiry(trx, replacement.token, expiry.month, expiry.year, ctx.now);
    }
    const marked = await markReplaced(trx, old.token, replacement.token, ctx.now);
    if (marked || found === undefined) {
      await appendAuditEvent(
        trx,
        {
          actor: ctx.actor,
          actorType: 'system',
          action: 'card.replaced',
          outcome: 'success',
          origin: 'webhook',
          resource: old.token,
          details: { replacedBy: replacement.token, shopper: old.shopper_ref, newCard: found === undefined },
        },
        ctx.now,
      );
    }
    return { state: 'applied', errorCode: null, card: replacement, change: marked ? 'replaced' : 'none' };
  });
}

async function cardOf(ctx: CardUpdateContext, ref: CardRef): Promise<CardRow | undefined> {
  if (ref.kind === 'token') return findCard(ctx.knex, ref.token);
  return findCardByFingerprints(ctx.knex, await ctx.fingerprints(ref.identifier));
}

async function createOnShopper(
  ctx: CardUpdateContext,
  trx: Knex.Transaction,
  shopperRef: string,
  identifier: Identifier,
  expiry: Expiry | undefined,
  keys: readonly FingerprintKey[],
): Promise<CardRow> {
  const token = newId('tok');
  const isPan = identifier.kind === 'pan';
  const sealed = isPan ? await ctx.sealPan(trx, token, identifier.value) : undefined;
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
  const stored = await insertCardForShopper(trx, card, await ctx.sealIdentifier(trx, token, identifier), keys, ctx.now);
  if (!stored) throw new RaceLost();
  return (await findCard(trx, token)) as CardRow;
}

function isLater(expiry: Expiry, card: CardRow): boolean {
  return (
    card.expiry_year === null ||
    card.expiry_month === null ||
    expiry.year * 12 + expiry.month > card.expiry_year * 12 + card.expiry_month
  );
}
