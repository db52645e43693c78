/**
 * A redelivered Adyen item (its signed fields already in the inbox) is a duplicate and changes nothing,
 * whatever its unsigned `additionalData` says: no identifier attached, no card created, no card update
 * applied (review finding H1). Adapted from review-a's proof of concept.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { startTestService, type TestService } from '../support/harness.js';
import { adyenItem, lettersOnly, postAdyen } from '../support/webhooks.js';

const up = (n: number): string => lettersOnly(randomBytes(32).toString('hex')).toUpperCase().slice(0, n);
const par = (): string => `PARX${up(25)}`.padEnd(29, 'Q');
const psp = (tag: string): string => `${tag}${up(14)}`.padEnd(16, 'Q').slice(0, 16);

describe('Adyen redelivery with rewritten additionalData (H1)', function () {
  this.timeout(120_000);
  let svc: TestService;
  before(async () => (svc = await startTestService()));
  after(async () => svc.close());
  const knex = () => svc.db.knex;
  const payment = async (externalId: string) =>
    (await knex()('payments')
      .where({ provider: 'adyen', external_id: externalId })
      .first('card_token', 'shopper_ref')) as { card_token: string | null; shopper_ref: string | null } | undefined;
  const count = async (table: string, where: Record<string, string> = {}): Promise<number> =>
    Number((await knex()(table).where(where).count({ n: '*' }))[0]?.n);
  /** The same signed fields and signature, `additionalData` replaced. */
  const rewritten = (item: Record<string, unknown>, additionalData: Record<string, string>) => ({
    ...item,
    additionalData: {
      ...additionalData,
      hmacSignature: (item['additionalData'] as Record<string, string>)['hmacSignature'] as string,
    },
  });

  it('a replay naming an unseen PAR attaches nothing: the PAR later names its own payment, not the replayed card', async () => {
    const attackerAlias = `AA${up(10)}`;
    const genuine = adyenItem({
      eventCode: 'AUTHORISATION',
      pspReference: psp('AP'),
      additionalData: { alias: attackerAlias },
    });
    expect((await postAdyen(svc, [genuine])).text).to.equal('[accepted]');
    const attacker = await payment(genuine['pspReference'] as string);
    expect(attacker?.card_token).to.be.a('string');
    const [inboxBefore, cardsBefore] = [await count('webhook_inbox'), await count('cards')];

    const victimPar = par();
    const replay = rewritten(genuine, { alias: attackerAlias, paymentAccountReference: victimPar });
    expect((await postAdyen(svc, [replay])).text).to.equal('[accepted]');
    expect(await count('webhook_inbox')).to.equal(inboxBefore);
    expect(await count('cards')).to.equal(cardsBefore);

    // The victim's later wallet payment, named by that PAR, is not routed to the replayed card.
    const walletPsp = psp('WP');
    await postAdyen(svc, [
      adyenItem({
        eventCode: 'AUTHORISATION',
        pspReference: walletPsp,
        additionalData: { paymentAccountReference: victimPar, paymentMethodVariant: 'visa_applepay' },
      }),
    ]);
    const wallet = await payment(walletPsp);
    expect(wallet?.card_token).to.be.a('string');
    expect(wallet?.card_token).to.not.equal(attacker?.card_token);
    expect(wallet?.shopper_ref).to.not.equal(attacker?.shopper_ref);
  });

  it("a replay carrying a forged Account Updater result neither creates a card nor marks the victim's replaced", async () => {
    const recurringVictim = psp('RV');
    const victimPsp = psp('VP');
    await postAdyen(svc, [
      adyenItem({
        eventCode: 'AUTHORISATION',
        pspReference: victimPsp,
        additionalData: { alias: `VA${up(10)}`, 'recurring.recurringDetailReference': recurringVictim },
      }),
    ]);
    const victim = await payment(victimPsp);
    expect(victim?.card_token).to.be.a('string');

    const genuine = adyenItem({
      eventCode: 'AUTHORISATION',
      pspReference: psp('AP'),
      additionalData: { alias: `AA${up(10)}` },
    });
    expect((await postAdyen(svc, [genuine])).text).to.equal('[accepted]');
    const [inboxBefore, cardsBefore, victimCardsBefore] = [
      await count('webhook_inbox'),
      await count('cards'),
      await count('cards', { shopper_ref: victim?.shopper_ref as string }),
    ];

    const replay = rewritten(genuine, {
      alias: `NA${up(10)}`,
      'recurring.recurringDetailReference': recurringVictim,
      realtimeAccountUpdaterStatus: 'CardChanged',
    });
    expect((await postAdyen(svc, [replay])).text).to.equal('[accepted]');

    expect(await count('webhook_inbox')).to.equal(inboxBefore);
    expect(await count('cards')).to.equal(cardsBefore);
    expect(await count('cards', { shopper_ref: victim?.shopper_ref as string })).to.equal(victimCardsBefore);
    const old = (await knex()('cards')
      .where({ token: victim?.card_token as string })
      .first('replaced_by')) as {
      replaced_by: string | null;
    };
    expect(old.replaced_by).to.equal(null);
    expect(await count('audit_events', { action: 'card.replaced', resource: victim?.card_token as string })).to.equal(
      0,
    );
  });
});
