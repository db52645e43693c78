/**
 * Card-data retention (PCI DSS 3.2.1, docs/data-protection.md) with a frozen, movable clock: a card
 * unused for the retention period loses its PAN ciphertext, the others keep it, and the evidence says
 * so; the scheduled run happens once a day across instances; a purged card's PAN fingerprint does not
 * block a MAC rotation.
 */
import { expect } from 'chai';
import { runLoyaltyCli } from '../../src/cli/loyalty.js';
import { CardRetention } from '../../src/cards/retention-service.js';
import { VaultService } from '../../src/cards/vault-service.js';
import type { AppError } from '../../src/errors/app-error.js';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { lastPaymentUseOfCards } from '../../src/payments/payment-read-store.js';
import { signToken } from '../support/auth.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { postPlatform } from '../support/webhooks.js';
import { keysFixture } from '../keys/keys-context.js';
import { newShopper, payment, type Shopper } from '../loyalty/support.js';

const DAY = 86_400_000;
let START = Date.now();

describe('card-data retention', function () {
  this.timeout(120_000);
  let svc: TestService;
  let day = 0;
  const clock = () => new Date(START + day * DAY);
  const pans = generatePans(4, '455566');
  const cards: Record<'old' | 'paid' | 'recent', Shopper> = {} as never;

  const pay = async (card: Shopper, amount: number) => {
    const p = payment(card, { amount, channel: 'in_store', occurredAt: clock().toISOString() });
    // Signed at the service's time: the signature's tolerance is checked against its clock.
    const res = await postPlatform(svc, p.event({ type: 'authorised' }), { timestamp: clock() });
    expect(res.status, res.text).to.equal(200);
  };
  const cli = async (...argv: string[]) => {
    let out = '';
    const deps = { knex: svc.db.knex, ledger: svc.service.loyalty, retention: svc.service.retention };
    const code = await runLoyaltyCli(argv, deps, { out: (t) => (out += t), err: (t) => (out += t) });
    return { code, out };
  };
  const detokenise = async (token: string) =>
    svc.request('POST', `/v1/tokens/${token}/detokenise`, {
      // Signed now, valid past the service's clock (JWT_MAX_TOKEN_AGE=0 in this file's service).
      token: await signToken({ scope: 'tokens:detokenise', subject: 'refund-service', expiresIn: 500 * 86_400 }),
      json: { reason: 'refund to original card' },
    });
  const pan = async (token: string) =>
    (await svc.db.knex('cards').where({ token }).first('pan_ciphertext', 'pan_key_version', 'pan_purged_at')) as {
      pan_ciphertext: Buffer | null;
      pan_key_version: number | null;
      pan_purged_at: Date | null;
    };

  let masterKey: string;

  before(async () => {
    const env = await testEnv({
      CARD_RETENTION_DAYS: '365',
      CARD_RETENTION_INTERVAL_MS: '0',
      DETOKENISE_ENABLED: 'true',
      DETOKENISE_RATE_LIMIT_PER_MINUTE: '100',
      JWT_MAX_TOKEN_AGE: '0',
    });
    masterKey = env['MASTER_KEY'] as string;
    svc = await startTestService({ clock, env });
    // Day 0 is now (test tokens are signed at the machine's time, which must not be ahead of the service's).
    START = Math.floor(Date.now() / 1000) * 1000 - 1000;
    day = 0;
    cards.old = await newShopper(svc, pans[0] as string);
    await pay(cards.old, 5_000);
    cards.paid = await newShopper(svc, pans[1] as string);
    day = 100;
    await pay(cards.paid, 2_000);
    day = 300;
    // The vault itself: a test token signed now would be expired at the service's day 300.
    const { card } = await svc.service.vault.tokenise({ kind: 'pan', pan: pans[2] as string });
    cards.recent = { shopperRef: card.shopperReference, cardToken: card.token, pan: pans[2] as string };
  });
  after(async () => svc.close());

  it('when the plan is asked for past the period, then it names what would go and changes nothing', async () => {
    day = 400;
    const res = await cli('retention', '--plan', '--json');
    expect(res.code, res.out).to.equal(0);
    const plan = JSON.parse(res.out);
    expect(plan).to.include({
      mode: 'plan',
      ran: false,
      retentionDays: 365,
      cutoff: new Date(START + 35 * DAY).toISOString(),
      purged: 1,
      remainingWithPan: 2,
      // the paid card: unchanged since day 0, but a payment used it on day 100
      oldestRemainingLastUsedAt: new Date(START + 100 * DAY).toISOString(),
      purgedTotal: 1,
    });
    expect((await pan(cards.old.cardToken)).pan_ciphertext).to.not.equal(null);
    expect(await svc.db.knex('card_retention_runs').count('* as n').first()).to.deep.include({ n: 0 });
  });

  it('when retention is applied with a frozen clock, then only the card past the period loses its PAN ciphertext, and the evidence, the run record and the audit entry say so', async () => {
    day = 400;
    const before = await checkLedger(svc.db.knex);
    const entriesBefore = await svc.db.knex('loyalty_entries').where({ shopper_ref: cards.old.shopperRef });
    const res = await cli('retention', '--apply', '--json');
    expect(res.code, res.out).to.equal(0);
    const evidence = JSON.parse(res.out);
    expect(evidence).to.include({
      mode: 'manual',
      ran: true,
      purged: 1,
      fingerprintsDropped: 0,
      remainingWithPan: 2,
      oldestRemainingLastUsedAt: new Date(START + 100 * DAY).toISOString(),
      purgedTotal: 1,
    });
    const old = await pan(cards.old.cardToken);
    expect(old).to.deep.include({ pan_ciphertext: null, pan_key_version: null });
    expect(old.pan_purged_at?.toISOString()).to.equal(clock().toISOString());
    expect((await pan(cards.paid.cardToken)).pan_ciphertext).to.not.equal(null);
    expect((await pan(cards.recent.cardToken)).pan_ciphertext).to.not.equal(null);

    const [run] = await svc.db.knex('card_retention_runs').select();
    expect(run).to.include({ run_key: evidence.runKey, mode: 'manual', purged: 1, remaining_with_pan: 2 });
    expect(run.oldest_remaining_last_used_at.toISOString()).to.equal(evidence.oldestRemainingLastUsedAt);
    const audit = await svc.db.knex('audit_events').where({ action: 'card.retention.purged' });
    expect(audit).to.have.length(1);
    const details = JSON.stringify(audit[0].details);
    expect(details).to.contain('"purged":1');
    for (const c of Object.values(cards)) {
      expect(details).not.to.contain(c.cardToken);
      expect(details).not.to.contain(c.pan.slice(-8));
    }
    // The loyalty history stays, and still reconciles.
    expect(await svc.db.knex('loyalty_entries').where({ shopper_ref: cards.old.shopperRef })).to.deep.equal(
      entriesBefore,
    );
    const after = await checkLedger(svc.db.knex);
    expect(after.ok, JSON.stringify(after.violations)).to.equal(true);
    expect(after.entries).to.equal(before.entries);

    const again = JSON.parse((await cli('retention', '--apply', '--json')).out);
    expect(again).to.include({ purged: 0, remainingWithPan: 2, purgedTotal: 1 });
  });

  it('when a purged card is detokenised, then 410 CARD_PAN_PURGED (audited); a kept card still answers its PAN', async () => {
    const purged = await detokenise(cards.old.cardToken);
    expect(purged.status, purged.text).to.equal(410);
    expect(purged.body.code).to.equal('CARD_PAN_PURGED');
    expect(purged.text).not.to.contain(cards.old.pan);
    const failure = await svc.db
      .knex('audit_events')
      .where({ action: 'card.detokenise', resource: cards.old.cardToken, outcome: 'failure' })
      .first();
    expect(failure.details.cause).to.equal('CARD_PAN_PURGED');
    const kept = await detokenise(cards.recent.cardToken);
    expect(kept.status, kept.text).to.equal(200);
    expect(kept.body.pan).to.equal(cards.recent.pan);
  });

  it('when a purged card is presented again, then its kept fingerprint recognises it: the same token and shopper, and no PAN stored again', async () => {
    const again = await svc.service.vault.tokenise({ kind: 'pan', pan: cards.old.pan });
    expect(again.created).to.equal(false);
    expect(again.card).to.deep.include({ token: cards.old.cardToken, shopperReference: cards.old.shopperRef });
    expect((await pan(cards.old.cardToken)).pan_ciphertext).to.equal(null);
  });

  it('when two instances try the day’s scheduled run at once, then exactly one makes it, and a later try that day finds it made', async () => {
    day = 401;
    const second = await startTestService({
      db: svc.db,
      clock,
      env: await testEnv({ CARD_RETENTION_DAYS: '365', CARD_RETENTION_INTERVAL_MS: '0', MASTER_KEY: masterKey }),
    });
    try {
      const runs = await Promise.all([svc.service.retention.runScheduled(), second.service.retention.runScheduled()]);
      expect(runs.map((r) => r.ran).sort()).to.deep.equal([false, true]);
      expect((await svc.service.retention.runScheduled()).ran).to.equal(false);
      const scheduled = await svc.db.knex('card_retention_runs').where({ mode: 'scheduled' });
      expect(scheduled.map((r: { run_key: string }) => r.run_key)).to.deep.equal([
        `scheduled:${clock().toISOString().slice(0, 10)}`,
      ]);
    } finally {
      await second.close();
    }
  });

  it('when an insider edits or deletes a run record, then the database refuses it', async () => {
    const edit = await svc.db
      .knex('card_retention_runs')
      .update({ purged: 0 })
      .catch((e: { message: string }) => e.message);
    expect(String(edit)).to.contain('append-only');
    const wipe = await svc.db
      .knex('card_retention_runs')
      .delete()
      .catch((e: { message: string }) => e.message);
    expect(String(wipe)).to.contain('append-only');
  });

  it('when the record is verified, then exit 0; after a run row is forged by hand, exit 1 naming it', async () => {
    const clean = await cli('retention', '--verify');
    expect(clean.code, clean.out).to.equal(0);
    await svc.db.knex('card_retention_runs').insert({
      run_key: 'scheduled:2099-01-10',
      mode: 'scheduled',
      retention_days: 365,
      cutoff: clock(),
      keep_fingerprints: true,
      purged: 0,
      fingerprints_dropped: 0,
      remaining_with_pan: 0,
      purged_total: 1,
      ran_by: 'system',
      ran_at: clock(),
    });
    const forged = await cli('retention', '--verify', '--json');
    expect(forged.code, forged.out).to.equal(1);
    expect(JSON.parse(forged.out).findings.map((f: { runKey: string }) => f.runKey)).to.deep.equal([
      'scheduled:2099-01-10',
    ]);
  });

  it('when no retention period is configured, then the command refuses with RETENTION_NOT_CONFIGURED and purges nothing', async () => {
    const unconfigured = new CardRetention(svc.db.knex, {
      policy: { days: 0, keepFingerprints: true },
      lastPaymentUse: lastPaymentUseOfCards,
      now: clock,
    });
    let out = '';
    const code = await runLoyaltyCli(
      ['retention', '--apply'],
      { knex: svc.db.knex, ledger: svc.service.loyalty, retention: unconfigured },
      { out: (t) => (out += t), err: (t) => (out += t) },
    );
    expect(code).to.equal(1);
    expect(out).to.contain('RETENTION_NOT_CONFIGURED');
  });

  it('when the command line is wrong, then exit 2 and nothing opened', async () => {
    expect((await cli('retention')).code).to.equal(2);
    expect((await cli('retention', '--plan', '--apply')).code).to.equal(2);
    expect((await cli('retention', '--verify', '--apply')).code).to.equal(2);
  });
});

describe('card-data retention: the fingerprint policy, and key rotation over purged cards', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let day = 0;
  const clock = () => new Date(START + day * DAY);
  const pans = generatePans(4, '455577');
  const test = { subject: 'test', shopperRef: undefined, origin: 'test' };
  const PAR = 'PARVALUEFORRETENTIONTEST';

  beforeEach(async () => {
    db = await createTestDatabase({ migrated: true });
    day = 0;
  });
  afterEach(async () => db.close());

  const retentionOf = (keepFingerprints: boolean) =>
    new CardRetention(db.knex, {
      policy: { days: 365, keepFingerprints },
      lastPaymentUse: lastPaymentUseOfCards,
      now: clock,
    });

  it('when the policy drops fingerprints, then the purged card is no longer recognised by its PAN (a new card), its PAR still is', async () => {
    const fx = await keysFixture(db, { policy: { singleOperator: true, propagationMs: 300 } });
    const vault = new VaultService(db.knex, fx.ring, { detokenise: { enabled: false, perMinute: 1 }, now: clock });
    const gone = (await vault.tokenise({ kind: 'pan', pan: pans[0] as string })).card;
    await vault.attachIdentifier(gone.token, { kind: 'par', par: PAR }, test);
    day = 400;
    const evidence = await retentionOf(false).apply({ subject: 'test-operator', origin: 'cli:test' });
    expect(evidence).to.include({ purged: 1, fingerprintsDropped: 1, remainingWithPan: 0 });
    expect(evidence.oldestRemainingLastUsedAt).to.equal(null);
    expect(await db.knex('identifier_fingerprints').where({ token: gone.token })).to.have.length(1); // the PAR's
    const anew = await vault.tokenise({ kind: 'pan', pan: pans[0] as string });
    expect(anew.created).to.equal(true);
    expect(anew.card.token).to.not.equal(gone.token);
    expect((await vault.tokenise({ kind: 'par', par: PAR })).card.token).to.equal(gone.token);
  });

  it('when fingerprints are kept and the MAC and PAN keys are rotated after a purge, then the backfills skip the purged card (its PAN fingerprint, with nothing to recompute it from, is dropped, not failed on), and v1 retires', async () => {
    const fx = await keysFixture(db, { policy: { singleOperator: true, propagationMs: 300 } });
    const vault = new VaultService(db.knex, fx.ring, { detokenise: { enabled: false, perMinute: 1 }, now: clock });
    const gone = (await vault.tokenise({ kind: 'pan', pan: pans[2] as string })).card;
    await vault.attachIdentifier(gone.token, { kind: 'par', par: PAR }, test);
    const kept = (await vault.tokenise({ kind: 'pan', pan: pans[3] as string })).card;
    day = 200;
    await vault.tokenise({ kind: 'pan', pan: pans[3] as string, expiryMonth: 12, expiryYear: 2031 });
    day = 400;
    const evidence = await retentionOf(true).apply({ subject: 'test-operator', origin: 'cli:test' });
    expect(evidence).to.include({ purged: 1, fingerprintsDropped: 0, remainingWithPan: 1 });
    expect(evidence.oldestRemainingLastUsedAt).to.equal(new Date(START + 200 * DAY).toISOString());
    expect(await db.knex('identifier_fingerprints').where({ token: gone.token })).to.have.length(2);

    for (const purpose of ['identifier-mac', 'pan-encryption'] as const) {
      const rotated = await fx.run('rotate', '--purpose', purpose, '--apply');
      expect(rotated.code, rotated.stderr).to.equal(0);
      const backfill = await fx.run('reencrypt', '--purpose', purpose);
      expect(backfill.code, backfill.stdout + backfill.stderr).to.equal(0);
      expect(backfill.stdout).to.contain(`every row is under ${purpose} v2`);
      const retired = await fx.run('retire', '--purpose', purpose, '--version', '1', '--apply');
      expect(retired.code, retired.stdout + retired.stderr).to.equal(0);
    }
    const left = await db.knex('identifier_fingerprints').where({ token: gone.token }).select('mac_key_version');
    expect(left).to.deep.equal([{ mac_key_version: 2 }]); // the PAR's, moved; the purged PAN's, dropped
    expect((await db.knex('cards').where({ token: gone.token }).first()).pan_ciphertext).to.equal(null);
    expect((await vault.tokenise({ kind: 'pan', pan: pans[3] as string })).card.token).to.equal(kept.token);
    expect((await vault.tokenise({ kind: 'par', par: PAR })).card.token).to.equal(gone.token);
  });
});

describe('card-data retention against an insider with database write access', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let day = 0;
  const clock = () => new Date(START + day * DAY);
  const pans = generatePans(4, '455588');
  const caller = { subject: 'refund-service', shopperRef: undefined, origin: 'test' };
  const operator = { subject: 'test-operator', origin: 'cli:test' };

  beforeEach(async () => {
    db = await createTestDatabase({ migrated: true });
    day = 0;
  });
  afterEach(async () => db.close());

  const setup = async (keepFingerprints: boolean) => {
    const fx = await keysFixture(db, { policy: { singleOperator: true, propagationMs: 300 } });
    const vault = new VaultService(db.knex, fx.ring, { detokenise: { enabled: true, perMinute: 100 }, now: clock });
    const retention = new CardRetention(db.knex, {
      policy: { days: 365, keepFingerprints },
      lastPaymentUse: lastPaymentUseOfCards,
      now: clock,
    });
    return { vault, retention };
  };

  it('when a future day’s scheduled run row is inserted by hand, then that day’s run still purges (under a re-run key, said loudly) and verify reports the forged row', async () => {
    const { vault, retention } = await setup(true);
    const card = (await vault.tokenise({ kind: 'pan', pan: pans[0] as string })).card;
    day = 400;
    const forged = `scheduled:${clock().toISOString().slice(0, 10)}`;
    await db.knex('card_retention_runs').insert({
      run_key: forged,
      mode: 'scheduled',
      retention_days: 365,
      cutoff: clock(),
      keep_fingerprints: true,
      purged: 0,
      fingerprints_dropped: 0,
      remaining_with_pan: 0,
      purged_total: 0,
      ran_by: 'system',
      ran_at: clock(),
    });
    const evidence = await retention.runScheduled();
    expect(evidence).to.include({ ran: true, purged: 1, replacesUnverifiedRun: forged });
    expect((await db.knex('cards').where({ token: card.token }).first()).pan_ciphertext).to.equal(null);
    // made now: a later try that day finds the re-run
    expect((await retention.runScheduled()).ran).to.equal(false);
    const findings = await retention.verify();
    expect(findings.map((f) => f.runKey)).to.deep.equal([forged]);
  });

  it('when a purged PAN is put back from a backup by hand, then detokenisation still answers CARD_PAN_PURGED and verify reports the card; the purge list cannot be edited', async () => {
    const { vault, retention } = await setup(true);
    const card = (await vault.tokenise({ kind: 'pan', pan: pans[1] as string })).card;
    const backup = await db.knex('cards').where({ token: card.token }).first('pan_ciphertext', 'pan_key_version');
    day = 400;
    expect(await retention.apply(operator)).to.include({ purged: 1, purgedTotal: 1 });
    expect(await retention.verify()).to.deep.equal([]);
    await db
      .knex('cards')
      .where({ token: card.token })
      .update({ ...backup, pan_purged_at: null, updated_at: clock() });
    const refused = await vault.detokenise(card.token, 'refund to original card', caller).catch((e: AppError) => e);
    expect((refused as AppError).code).to.equal('CARD_PAN_PURGED');
    const findings = await retention.verify();
    expect(findings.map((f) => f.token)).to.deep.equal([card.token]);
    const wipe = await db
      .knex('card_retention_purges')
      .delete()
      .catch((e: { message: string }) => e.message);
    expect(String(wipe)).to.contain('append-only');
  });

  it('when the PAN of a purged card is presented again (fingerprints dropped), then it is stored again with an audited card.pan.restored, detokenises, and verify finds nothing', async () => {
    const { vault, retention } = await setup(false);
    const card = (await vault.tokenise({ kind: 'pan', pan: pans[2] as string })).card;
    day = 400;
    expect(await retention.apply(operator)).to.include({ purged: 1 });
    await vault.attachIdentifier(card.token, { kind: 'pan', pan: pans[2] as string }, caller);
    expect(await db.knex('audit_events').where({ action: 'card.pan.restored', resource: card.token })).to.have.length(
      1,
    );
    expect((await vault.detokenise(card.token, 'refund to original card', caller)).pan).to.equal(pans[2]);
    expect(await retention.verify()).to.deep.equal([]);
  });

  it('when a card is only detokenised or recognised by tokenise, then that counts as use: it keeps its PAN', async () => {
    const { vault, retention } = await setup(true);
    const billed = (await vault.tokenise({ kind: 'pan', pan: pans[0] as string })).card;
    const seen = (await vault.tokenise({ kind: 'pan', pan: pans[3] as string })).card;
    day = 200;
    await vault.tokenise({ kind: 'pan', pan: pans[3] as string });
    day = 300;
    await vault.detokenise(billed.token, 'card-on-file billing', caller);
    day = 400;
    const evidence = await retention.apply(operator);
    expect(evidence).to.include({ purged: 0, remainingWithPan: 2 });
    expect(evidence.oldestRemainingLastUsedAt).to.equal(new Date(START + 200 * DAY).toISOString());
    expect((await db.knex('cards').where({ token: seen.token }).first()).pan_ciphertext).to.not.equal(null);
  });
});
