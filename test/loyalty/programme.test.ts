import { expect } from 'chai';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { balance, newShopper, payment } from './support.js';

describe('loyalty: the programme', function () {
  this.timeout(60_000);
  let svc: TestService;
  let admin: string;

  before(async () => {
    svc = await startTestService();
    admin = await signToken({ scope: 'loyalty:admin' });
  });
  after(async () => svc.close());

  it('when a shopper token reads the programme, then it sees the first version with its defaults', async () => {
    const res = await svc.request('GET', '/v1/programme', {
      token: await signToken({ scope: 'loyalty:read', shopperRef: 'shp_aaaaaaaaaaaaaaaaaaaaaaaaaa' }),
    });
    expect(res.status).to.equal(200);
    expect(res.body).to.deep.include({
      version: 1,
      rules: {
        pointsPerUnit: 1,
        currencyPointsPerUnit: {},
        channelMultipliers: {},
        minimumAmount: {},
        autoCaptureChannels: ['in_store'],
        pointsLifetimeMonths: 12,
        negativeBalanceAllowance: 0,
        // Stored before the controls existed: read as it behaved (holds never lapse, shortfalls written off).
        holdWindowHours: null,
        spentPointsPolicy: 'write_off',
        clawbackLimit: 0,
        earningCap: null,
        redemptionVelocity: null,
      },
    });
  });

  it('when a client without loyalty:admin publishes rules, then 403 and no version is added', async () => {
    const res = await svc.request('PUT', '/v1/programme', {
      token: await signToken({ scope: 'loyalty:read loyalty:write loyalty:redeem' }),
      json: { pointsPerUnit: 5 },
    });
    expect(res.status).to.equal(403);
    expect(res.body.code).to.equal('INSUFFICIENT_SCOPE');
    expect((await svc.request('GET', '/v1/programme', { token: admin })).body.version).to.equal(1);
  });

  it('when the rules are out of bounds or unknown, then 400 VALIDATION_FAILED naming the field', async () => {
    for (const [json, pointer] of [
      [{ pointsPerUnit: 1000 }, '/body/pointsPerUnit'],
      [{ pointsPerUnit: 1, channelMultipliers: { in_store: 50 } }, '/body/channelMultipliers/in_store'],
      [{ pointsPerUnit: 1, channelMultipliers: { drive_thru: 2 } }, '/body/channelMultipliers'],
      [{ pointsPerUnit: 1, negativeBalanceAllowance: -1 }, '/body/negativeBalanceAllowance'],
      [{ pointsPerUnit: 1, pointsLifetimeMonths: 0 }, '/body/pointsLifetimeMonths'],
      [{ pointsPerUnit: 1, bonus: true }, '/body'],
      [{ pointsPerUnit: 1, holdWindowHours: 0 }, '/body/holdWindowHours'],
      [{ pointsPerUnit: 1, spentPointsPolicy: 'forgive' }, '/body/spentPointsPolicy'],
      [{ pointsPerUnit: 1, clawbackLimit: -5 }, '/body/clawbackLimit'],
      [{ pointsPerUnit: 1, earningCap: { points: 100 } }, '/body/earningCap'],
      [{ pointsPerUnit: 1, earningCap: { points: 100, period: 'fortnight' } }, '/body/earningCap/period'],
      [{ pointsPerUnit: 1, redemptionVelocity: { windowSeconds: 60 } }, '/body/redemptionVelocity'],
      [{ pointsPerUnit: 1, redemptionVelocity: { windowSeconds: 0, maxCount: 1 } }, '/body/redemptionVelocity'],
      [{}, '/body'],
    ] as const) {
      const res = await svc.request('PUT', '/v1/programme', { token: admin, json });
      expect(res.status, JSON.stringify(json)).to.equal(400);
      expect(res.body.code).to.equal('VALIDATION_FAILED');
      expect(res.body.errors.map((e: { pointer: string }) => e.pointer).join(' '), JSON.stringify(json)).to.contain(
        pointer,
      );
    }
  });

  it('when an admin publishes an in-store multiplier, then it is audited and in-store payments authorised after it earn double', async () => {
    const res = await svc.request('PUT', '/v1/programme', {
      token: admin,
      json: { pointsPerUnit: 1, channelMultipliers: { in_store: 2 } },
    });
    expect(res.status).to.equal(201);
    expect(res.body.version).to.equal(2);
    expect(res.body.rules).to.deep.include({ channelMultipliers: { in_store: 2 }, negativeBalanceAllowance: 0 });
    // A version published now gets the controls' defaults: holds lapse after 7 days, spent points become debt.
    expect(res.body.rules).to.deep.include({
      holdWindowHours: 168,
      spentPointsPolicy: 'debt',
      clawbackLimit: 0,
      earningCap: null,
      redemptionVelocity: null,
    });
    const audit = await svc.db.knex('audit_events').where({ action: 'loyalty.programme.published' });
    expect(audit.map((a) => a.resource)).to.deep.equal(['programme:v2']);

    const s = await newShopper(svc, generatePans(1, '466666')[0] as string);
    await new Promise((resolve) => setTimeout(resolve, 5)); // authorised strictly after the version
    await payment(s, { channel: 'in_store', amount: 1_299 }).send(svc, { type: 'authorised' });
    await payment(s, { channel: 'online', amount: 1_299 }).send(svc, { type: 'authorised' });
    expect(await balance(svc, s.shopperRef)).to.include({ available: 24, pending: 12 });
  });
});
