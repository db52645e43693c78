/**
 * Loyalty membership: enrolment, and linking a further card, which merges two shoppers when the card
 * already belongs to another one.
 *
 * A merge moves the absorbed shopper's cards, payments, lots, redemptions and balances to the
 * survivor in one transaction, exactly once: the absorbed account is emptied by a `merge_out` entry
 * and the survivor credited by a `merge_in` entry, both with unique business keys, and the absorbed
 * reference is recorded as merged, so a retried merge finds nothing left to move. Its history stays
 * under its own reference (listed with the survivor's) and its reference keeps resolving.
 *
 * Who may merge: a shopper token may absorb a shopper that is not an enrolled member (one created
 * by purchases alone: presenting that card's token is the claim). Absorbing another *enrolled*
 * member takes `loyalty:admin`, so a leaked card token cannot move someone's account into another.
 */
import type { Knex } from 'knex';
import { appendAuditEvent } from '../audit/audit-log.js';
import { decryptValue, emailAad, encryptValue } from '../crypto/field-crypto.js';
import type { CardInput, VaultService } from '../cards/vault-service.js';
import { AppError } from '../errors/app-error.js';
import { eventBody } from '../events/event-types.js';
import { writeEvents } from '../events/outbox-store.js';
import { retryOnStaleKey, type KeyRing } from '../keys/key-ring.js';
import { LedgerBook, type AccountRow } from './ledger-book.js';
import type { Actor } from '../auth/actors.js';
import { refuseCardNumbers } from '../card-data/request-fields.js';
import { withRetry } from '../db/retry.js';
import { survivorOf } from '../shoppers/shopper-access.js';
import {
  clearContact,
  externalIdTaken,
  mergesOf,
  moveLotsAndRedemptions,
  moveRedemptionKeys,
  recordMerge,
  updateAccount,
} from './member-store.js';
import { moveStoreCredit } from './store-credit.js';

export interface Enrolment {
  readonly email?: string;
  readonly externalMemberId?: string;
}

export interface Membership {
  readonly shopperReference: string;
  readonly enrolled: boolean;
  readonly enrolledAt: string | undefined;
  readonly externalMemberId: string | undefined;
  readonly hasEmail: boolean;
}

export interface LinkResult {
  readonly shopperReference: string;
  readonly cardToken: string;
  /** The shopper absorbed by this link, if the card belonged to another one. */
  readonly mergedShopperReference: string | undefined;
  readonly alreadyLinked: boolean;
}

/**
 * Moves every payment of one shopper to another in the caller's transaction, payment rows locked
 * first (the payments feature provides it; the lock order every writer keeps is payments, accounts).
 */
export interface ShopperPayments {
  moveShopperPayments(trx: Knex.Transaction, fromShopper: string, toShopper: string): Promise<number>;
}

export interface MemberServiceDeps {
  readonly knex: Knex;
  readonly keyRing: KeyRing;
  readonly vault: VaultService;
  readonly payments: ShopperPayments;
  readonly now?: () => Date;
}

export class MemberService {
  private readonly now: () => Date;

  constructor(private readonly deps: MemberServiceDeps) {
    this.now = deps.now ?? (() => new Date());
  }

  /**
   * Marks the shopper as a member (idempotent: enrolling again keeps the first enrolment time and
   * updates the contact details given). The e-mail address is encrypted like a PAN: the programme
   * must be able to contact its members, so a one-way hash would not do, and it never appears in a
   * log, an event or a response (responses say only whether one is on file).
   */
  async enrol(shopperRef: string, enrolment: Enrolment, actor: Actor): Promise<Membership> {
    refuseCardNumbers({ email: enrolment.email, externalMemberId: enrolment.externalMemberId });
    // An e-mail sealed under a version that stopped being active (a stale ring) is refused by the
    // database: the whole transaction runs once more on a reloaded ring.
    return retryOnStaleKey(this.deps.keyRing, () =>
      this.deps.knex.transaction(async (trx) => {
        const now = this.now();
        const { account } = await LedgerBook.open(trx, shopperRef, now);
        const update: Record<string, unknown> = { enrolled_at: account.enrolled_at ?? now, updated_at: now };
        if (enrolment.externalMemberId !== undefined) {
          if (await externalIdTaken(trx, enrolment.externalMemberId, shopperRef)) {
            throw new AppError('EXTERNAL_MEMBER_ID_TAKEN');
          }
          update['external_member_id'] = enrolment.externalMemberId;
        }
        if (enrolment.email !== undefined)
          Object.assign(update, await this.sealEmail(trx, shopperRef, enrolment.email));
        const row = await updateAccount(trx, shopperRef, update);
        if (account.enrolled_at === null) {
          // The event says that the shopper joined, never how to reach them: no e-mail in it.
          await writeEvents(trx, [
            eventBody(
              'shopper.enrolled',
              `shopper:${shopperRef}:enrolled`,
              shopperRef,
              {
                enrolledAt: now.toISOString(),
                ...(enrolment.externalMemberId === undefined ? {} : { externalMemberId: enrolment.externalMemberId }),
              },
              now,
            ),
          ]);
          await appendAuditEvent(
            trx,
            {
              actor: actor.subject,
              actorType: 'client',
              action: 'loyalty.member.enrolled',
              outcome: 'success',
              origin: actor.origin,
              resource: shopperRef,
            },
            now,
          );
        }
        return membershipOf(row);
      }),
    ).catch((error: unknown) => {
      // Two enrolments racing for one external id: the index decides, the loser is told so.
      const e = error as { code?: unknown; constraint?: unknown } | null;
      if (e?.code === '23505' && e.constraint === 'loyalty_accounts_external_member') {
        throw new AppError('EXTERNAL_MEMBER_ID_TAKEN', { cause: error });
      }
      throw error;
    });
  }

  /**
   * Links a card to the shopper; a card of another shopper merges that shopper into this one. The card
   * is named by its token, or (`loyalty:admin` only) by an identifier it holds (PAR, gateway alias):
   * what a `409 IDENTIFIER_ALREADY_LINKED` leads to. A shopper token naming an identifier is refused
   * before anything is looked up, so it cannot learn whether an identifier is known, nor the token of
   * the card that holds it.
   */
  async linkCard(
    shopperRef: string,
    cardRef: string | CardInput,
    actor: Actor & { readonly admin: boolean },
  ): Promise<LinkResult> {
    const { knex, vault } = this.deps;
    const cardToken = typeof cardRef === 'string' ? cardRef : await this.tokenOf(cardRef, actor);
    const card = await vault.getCard(cardToken, {
      subject: actor.subject,
      shopperRef: undefined,
      origin: actor.origin,
    });
    // The merge may seal the absorbed member's e-mail again for the survivor: retried whole on a
    // reloaded ring when the database refuses the key version (stale ring).
    return withRetry(() =>
      retryOnStaleKey(this.deps.keyRing, () =>
        knex.transaction(async (trx) => {
          const owner = await survivorOf(trx, (await vault.ownerOf(trx, card.token)) ?? card.shopperReference);
          const merged = owner !== shopperRef && (await this.merge(trx, owner, shopperRef, card.token, actor));
          return {
            shopperReference: shopperRef,
            cardToken: card.token,
            mergedShopperReference: merged ? owner : undefined,
            alreadyLinked: !merged,
          };
        }),
      ),
    );
  }

  private async tokenOf(input: CardInput, actor: { readonly admin: boolean }): Promise<string> {
    if (!actor.admin) {
      throw new AppError('INSUFFICIENT_SCOPE', { detail: 'Linking a card by identifier takes loyalty:admin.' });
    }
    const card = await this.deps.vault.lookup(input);
    if (card === undefined) throw new AppError('NOT_FOUND', { detail: 'No card holds this identifier.' });
    return card.token;
  }

  private async merge(
    trx: Knex.Transaction,
    absorbed: string,
    survivor: string,
    cardToken: string,
    actor: Actor & { readonly admin: boolean },
  ): Promise<boolean> {
    const { vault, payments } = this.deps;
    const now = this.now();
    // Lock order: payments, then both accounts in shopper order.
    const paymentsMoved = await payments.moveShopperPayments(trx, absorbed, survivor);
    // The merge checks for a merge made meanwhile itself (below), so it opens merged accounts too.
    const books = await LedgerBook.openMany(trx, [absorbed, survivor], now, { allowMerged: true });
    // Both accounts are locked now: a merge that committed meanwhile shows. The same link made
    // concurrently leaves nothing to do; a merge the other way round is a conflict to read again.
    const meanwhile = await mergesOf(trx, [absorbed, survivor]);
    const [done] = meanwhile;
    if (meanwhile.length === 1 && done?.merged_ref === absorbed && done.survivor_ref === survivor) return false;
    if (meanwhile.length > 0) {
      throw new AppError('CONFLICT', { detail: 'One of the shoppers was merged meanwhile; read the shopper again.' });
    }
    const from = books.get(absorbed) as LedgerBook;
    const into = books.get(survivor) as LedgerBook;
    refuseUnlessAllowed(actor, from.account, into.account);
    const cardsMoved = await vault.moveCards(trx, absorbed, survivor);
    const lotsMoved = await moveLotsAndRedemptions(trx, absorbed, survivor);

    const moved = await moveBalance(from, into, cardToken, now);
    // Store credit moves with the points, under the same two account locks (store-credit.ts).
    await moveStoreCredit(trx, absorbed, survivor, actor.subject, now);
    await LedgerBook.flushAll(trx, [from, into]);
    await this.moveMembership(trx, from.account, into.account);
    // Redemptions retried under the absorbed reference (after a 308) still find their key.
    await moveRedemptionKeys(trx, absorbed, survivor);
    await recordMerge(trx, absorbed, survivor, actor.subject, now);
    await appendAuditEvent(
      trx,
      {
        actor: actor.subject,
        actorType: 'client',
        action: 'shopper.merged',
        outcome: 'success',
        origin: actor.origin,
        resource: survivor,
        details: {
          absorbed,
          survivor,
          cards: cardsMoved,
          payments: paymentsMoved,
          lots: lotsMoved,
          points: { available: moved.available, pending: moved.pending, debt: moved.debt },
        },
      },
      now,
    );
    return true;
  }

  /**
   * A survivor that is not a member takes over the absorbed shopper's membership: enrolment time,
   * external id and e-mail (decrypted and sealed again, bound to the survivor). The absorbed account
   * keeps no contact details either way.
   */
  private async moveMembership(trx: Knex.Transaction, from: AccountRow, into: AccountRow): Promise<void> {
    const takeOver = into.enrolled_at === null && from.enrolled_at !== null;
    let email: string | undefined;
    if (takeOver && from.email_ciphertext !== null && from.email_key_version !== null) {
      const key = await this.deps.keyRing.version('pan-encryption', from.email_key_version, trx);
      email = decryptValue(key.key, emailAad(from.shopper_ref, from.email_key_version), from.email_ciphertext);
    }
    await clearContact(trx, from.shopper_ref);
    if (!takeOver) return;
    await updateAccount(trx, into.shopper_ref, {
      enrolled_at: from.enrolled_at,
      external_member_id: from.external_member_id,
      ...(email === undefined ? {} : await this.sealEmail(trx, into.shopper_ref, email)),
    });
  }

  private async sealEmail(
    trx: Knex.Transaction,
    shopperRef: string,
    email: string,
  ): Promise<{ email_ciphertext: Buffer; email_key_version: number }> {
    const key = await this.deps.keyRing.active('pan-encryption', trx);
    return {
      email_ciphertext: encryptValue(key.key, emailAad(shopperRef, key.version), email),
      email_key_version: key.version,
    };
  }
}

/**
 * Absorbing an enrolled member takes `loyalty:admin`, and only a member may absorb another shopper
 * by linking its card (unless an admin links it).
 */
function refuseUnlessAllowed(actor: { readonly admin: boolean }, from: AccountRow, into: AccountRow): void {
  if (!actor.admin && from.enrolled_at !== null) {
    throw new AppError('MERGE_REQUIRES_ADMIN', {
      detail: 'The card belongs to another enrolled member; merging two members takes loyalty:admin.',
    });
  }
  if (!actor.admin && into.enrolled_at === null) {
    throw new AppError('MEMBERSHIP_REQUIRED', {
      detail: 'Enrol the shopper before linking a card of another shopper.',
    });
  }
}

/**
 * Empties the absorbed account into the survivor's (`merge_out` / `merge_in`, each with its unique
 * business key), pays debt brought in from the survivor's points, and queues the merge's events on
 * the survivor's book. Returns what was moved.
 */
async function moveBalance(from: LedgerBook, into: LedgerBook, cardToken: string, now: Date): Promise<AccountRow> {
  const absorbed = from.shopperRef;
  const survivor = into.shopperRef;
  const moved = { ...from.account };
  from.record(
    'merge_out',
    -moved.available,
    { available: -moved.available, pending: -moved.pending, debt: -moved.debt },
    `merge:${absorbed}:out`,
  );
  into.record(
    'merge_in',
    moved.available,
    { available: moved.available, pending: moved.pending, debt: moved.debt },
    `merge:${absorbed}:in`,
  );
  into.account.lifetime_earned += moved.lifetime_earned;
  from.account.lifetime_earned = 0;
  // Debt brought in is paid from the survivor's points at once, as it would have been on earning.
  await into.settleDebt(`merge:${absorbed}:in`);
  into.emit(
    eventBody(
      'shopper.merged',
      `merge:${absorbed}`,
      survivor,
      {
        mergedShopperReference: absorbed,
        moved: { available: moved.available, pending: moved.pending, lifetimeEarned: moved.lifetime_earned },
        balance: {
          available: into.account.available,
          pending: into.account.pending,
          lifetimeEarned: into.account.lifetime_earned,
        },
      },
      now,
    ),
  );
  into.emit(
    eventBody(
      'card.linked',
      `merge:${absorbed}:card:${cardToken}`,
      survivor,
      { cardToken, previousShopperReference: absorbed },
      now,
    ),
  );
  return moved;
}

function membershipOf(row: AccountRow): Membership {
  return {
    shopperReference: row.shopper_ref,
    enrolled: row.enrolled_at !== null,
    enrolledAt: row.enrolled_at?.toISOString(),
    externalMemberId: row.external_member_id ?? undefined,
    hasEmail: row.email_ciphertext !== null,
  };
}
