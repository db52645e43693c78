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
import { emailAad, encryptValue } from '../cards/card-crypto.js';
import type { VaultService } from '../cards/vault-service.js';
import { AppError } from '../errors/app-error.js';
import type { KeyRing } from '../keys/key-ring.js';
import type { PaymentService } from '../payments/payment-service.js';
import { LedgerBook, lockAccount, type AccountRow } from './ledger-book.js';
import type { Actor } from './loyalty-service.js';
import { withRetry } from './retry.js';
import { survivorOf } from './shoppers.js';

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

export interface MemberServiceDeps {
  readonly knex: Knex;
  readonly keyRing: KeyRing;
  readonly vault: VaultService;
  readonly payments: PaymentService;
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
    const { knex, keyRing } = this.deps;
    return knex.transaction(async (trx) => {
      const now = this.now();
      const account = await lockAccount(trx, shopperRef, now);
      const update: Record<string, unknown> = { enrolled_at: account.enrolled_at ?? now, updated_at: now };
      if (enrolment.externalMemberId !== undefined) {
        const taken = (await trx('loyalty_accounts')
          .where({ external_member_id: enrolment.externalMemberId })
          .whereNot({ shopper_ref: shopperRef })
          .first('shopper_ref')) as unknown;
        if (taken !== undefined) throw new AppError('EXTERNAL_MEMBER_ID_TAKEN');
        update['external_member_id'] = enrolment.externalMemberId;
      }
      if (enrolment.email !== undefined) {
        const key = await keyRing.active('pan-encryption', trx);
        update['email_ciphertext'] = encryptValue(key.key, emailAad(shopperRef, key.version), enrolment.email);
        update['email_key_version'] = key.version;
      }
      const [row] = (await trx('loyalty_accounts')
        .where({ shopper_ref: shopperRef })
        .update(update)
        .returning('*')) as AccountRow[];
      if (account.enrolled_at === null) {
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
      return membershipOf(row as AccountRow);
    });
  }

  async membership(shopperRef: string): Promise<Membership> {
    const row = (await this.deps.knex('loyalty_accounts').where({ shopper_ref: shopperRef }).first()) as
      AccountRow | undefined;
    return row === undefined
      ? {
          shopperReference: shopperRef,
          enrolled: false,
          enrolledAt: undefined,
          externalMemberId: undefined,
          hasEmail: false,
        }
      : membershipOf(row);
  }

  /** Links a card to the shopper; a card of another shopper merges that shopper into this one. */
  async linkCard(
    shopperRef: string,
    cardToken: string,
    actor: Actor & { readonly admin: boolean },
  ): Promise<LinkResult> {
    const { knex, vault } = this.deps;
    const card = await vault.getCard(cardToken, {
      subject: actor.subject,
      shopperRef: undefined,
      origin: actor.origin,
    });
    return withRetry(() =>
      knex.transaction(async (trx) => {
        const owner = await survivorOf(trx, (await vault.ownerOf(trx, card.token)) ?? card.shopperReference);
        const merged = owner !== shopperRef && (await this.merge(trx, owner, shopperRef, actor));
        return {
          shopperReference: shopperRef,
          cardToken: card.token,
          mergedShopperReference: merged ? owner : undefined,
          alreadyLinked: !merged,
        };
      }),
    );
  }

  private async merge(
    trx: Knex.Transaction,
    absorbed: string,
    survivor: string,
    actor: Actor & { readonly admin: boolean },
  ): Promise<boolean> {
    const { vault, payments } = this.deps;
    const now = this.now();
    // Lock order: payments, then both accounts in shopper order.
    const paymentsMoved = await payments.moveShopperPayments(trx, absorbed, survivor);
    const [first, second] = [absorbed, survivor].sort();
    const books = new Map<string, LedgerBook>();
    for (const ref of [first as string, second as string]) books.set(ref, await LedgerBook.open(trx, ref, now));
    // Both accounts are locked now: a merge that committed meanwhile shows. The same link made
    // concurrently leaves nothing to do; a merge the other way round is a conflict to read again.
    const meanwhile = (await trx('shopper_merges').whereIn('merged_ref', [absorbed, survivor]).select()) as {
      merged_ref: string;
      survivor_ref: string;
    }[];
    const [done] = meanwhile;
    if (meanwhile.length === 1 && done?.merged_ref === absorbed && done.survivor_ref === survivor) return false;
    if (meanwhile.length > 0) {
      throw new AppError('CONFLICT', { detail: 'One of the shoppers was merged meanwhile; read the shopper again.' });
    }
    const from = books.get(absorbed) as LedgerBook;
    const into = books.get(survivor) as LedgerBook;
    if (from.account.enrolled_at !== null && !actor.admin) {
      throw new AppError('MERGE_REQUIRES_ADMIN', {
        detail: 'The card belongs to another enrolled member; merging two members takes loyalty:admin.',
      });
    }
    const cardsMoved = await vault.moveCards(trx, absorbed, survivor);
    const lotsMoved = await trx('loyalty_lots').where({ shopper_ref: absorbed }).update({ shopper_ref: survivor });
    await trx('loyalty_redemptions').where({ shopper_ref: absorbed }).update({ shopper_ref: survivor });

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
    await from.flush();
    await into.flush();
    if (into.account.enrolled_at === null && from.account.enrolled_at !== null) {
      // The survivor carries the membership on; the absorbed account keeps no contact details.
      await trx('loyalty_accounts').where({ shopper_ref: survivor }).update({
        enrolled_at: from.account.enrolled_at,
        email_ciphertext: null,
        email_key_version: null,
      });
    }
    await trx('loyalty_accounts')
      .where({ shopper_ref: absorbed })
      .update({ email_ciphertext: null, email_key_version: null, external_member_id: null });

    await trx('shopper_merges').where({ survivor_ref: absorbed }).update({ survivor_ref: survivor });
    await trx('shopper_merges').insert({
      merged_ref: absorbed,
      survivor_ref: survivor,
      merged_by: actor.subject,
      merged_at: now,
    });
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
