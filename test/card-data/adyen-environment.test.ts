/**
 * Adyen hardening (issue 16): Basic auth and the environment are required in production when Adyen is
 * enabled (start-up stops naming the variable), and a notification from the other environment is
 * refused whole; once the environment is configured, so is a notification without the flag.
 */
import { expect } from 'chai';
import { signToken } from '../support/auth.js';
import { ConfigError, loadConfig, type Env } from '../../src/config/config.js';
import { startTestService, testEnv } from '../support/harness.js';
import { WEBHOOK_SECRETS, adyenItem } from '../support/webhooks.js';

const production: Env = {
  NODE_ENV: 'production',
  DATABASE_URL: 'postgres://svc:secret-password@db.internal:5432/loyalty',
  MASTER_KEY_FILE: '/run/secrets/lv-master-key',
  AUTH_ISSUER: 'https://idp.example/',
  AUTH_AUDIENCE: 'loyalty-vault',
  AUTH_JWKS_URL: 'https://idp.example/.well-known/jwks.json',
  WEBHOOK_ADYEN_HMAC_KEYS: WEBHOOK_SECRETS.adyen[0],
};

function problemsOf(env: Env): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).to.be.instanceOf(ConfigError);
    return [...(error as ConfigError).problems];
  }
  return [];
}

describe('Adyen: Basic auth and environment', function () {
  this.timeout(60_000);

  describe('when configured for production, then start-up stops naming the variable', () => {
    const cases: [string, Env, string | undefined][] = [
      ['no Basic auth', { WEBHOOK_ADYEN_ENVIRONMENT: 'live' }, 'WEBHOOK_ADYEN_BASIC_AUTH'],
      ['no environment', { WEBHOOK_ADYEN_BASIC_AUTH: 'adyen:s3cret-pass' }, 'WEBHOOK_ADYEN_ENVIRONMENT'],
      [
        'an environment that is neither test nor live',
        { WEBHOOK_ADYEN_BASIC_AUTH: 'adyen:s3cret-pass', WEBHOOK_ADYEN_ENVIRONMENT: 'prod' },
        'WEBHOOK_ADYEN_ENVIRONMENT',
      ],
      ['both set', { WEBHOOK_ADYEN_BASIC_AUTH: 'adyen:s3cret-pass', WEBHOOK_ADYEN_ENVIRONMENT: 'live' }, undefined],
    ];
    for (const [name, extra, variable] of cases) {
      it(`when ${name}, then ${variable ?? 'it starts'}`, () => {
        const problems = problemsOf({ ...production, ...extra }).filter((p) => p.includes('ADYEN'));
        if (variable === undefined) expect(problems).to.deep.equal([]);
        else expect(problems.some((p) => p.startsWith(variable))).to.equal(true);
      });
    }

    it('when Adyen is not enabled in production, then neither is required', () => {
      const withoutAdyen: Env = Object.fromEntries(
        Object.entries(production).filter(([name]) => name !== 'WEBHOOK_ADYEN_HMAC_KEYS'),
      );
      expect(problemsOf(withoutAdyen).filter((p) => p.includes('ADYEN'))).to.deep.equal([]);
    });
  });

  it('when the live flag differs from WEBHOOK_ADYEN_ENVIRONMENT, then 422 WEBHOOK_ENVIRONMENT_MISMATCH and nothing is stored', async () => {
    const svc = await startTestService({ env: await testEnv({ WEBHOOK_ADYEN_ENVIRONMENT: 'live' }) });
    try {
      const item = adyenItem({ eventCode: 'AUTHORISATION', pspReference: 'ENVTEST000000001' });
      const send = (live: string) =>
        svc.request('POST', '/v1/webhooks/adyen', {
          body: JSON.stringify({ live, notificationItems: [{ NotificationRequestItem: item }] }),
          headers: { 'content-type': 'application/json' },
        });
      const test = await send('false');
      expect(test.status).to.equal(422);
      expect(test.body.code).to.equal('WEBHOOK_ENVIRONMENT_MISMATCH');
      expect(await svc.db.knex('webhook_inbox').where({ provider: 'adyen' })).to.deep.equal([]);
      const live = await send('true');
      expect(live.status).to.equal(200);
      expect(live.text).to.equal('[accepted]');
    } finally {
      await svc.close();
    }
  });

  describe('when the live flag is absent', () => {
    const envelope = (pspReference: string) =>
      JSON.stringify({
        notificationItems: [{ NotificationRequestItem: adyenItem({ eventCode: 'AUTHORISATION', pspReference }) }],
      });
    const send = (svc: Awaited<ReturnType<typeof startTestService>>, pspReference: string) =>
      svc.request('POST', '/v1/webhooks/adyen', {
        body: envelope(pspReference),
        headers: { 'content-type': 'application/json' },
      });

    for (const environment of ['live', 'test']) {
      it(`and WEBHOOK_ADYEN_ENVIRONMENT=${environment} is configured, then 422 WEBHOOK_ENVIRONMENT_MISMATCH like a mismatch, counted, nothing stored`, async () => {
        const svc = await startTestService({ env: await testEnv({ WEBHOOK_ADYEN_ENVIRONMENT: environment }) });
        try {
          const res = await send(svc, 'ENVTESTNOFLAGAAA');
          expect(res.status).to.equal(422);
          expect(res.body.code).to.equal('WEBHOOK_ENVIRONMENT_MISMATCH');
          expect(await svc.db.knex('webhook_inbox').where({ provider: 'adyen' })).to.deep.equal([]);
          expect(await svc.db.knex('payments').where({ provider: 'adyen' })).to.deep.equal([]);
          const metrics = await svc.request('GET', '/metrics', { token: await signToken({ scope: 'metrics:read' }) });
          expect(metrics.text).to.match(
            /webhook_deliveries_total\{[^}]*outcome="WEBHOOK_ENVIRONMENT_MISMATCH"[^}]*\} 1\b/,
          );
        } finally {
          await svc.close();
        }
      });
    }

    it('and WEBHOOK_ADYEN_ENVIRONMENT is not configured (development), then the notification is accepted', async () => {
      const svc = await startTestService();
      try {
        const res = await send(svc, 'ENVTESTNOFLAGBBB');
        expect(res.status).to.equal(200);
        expect(res.text).to.equal('[accepted]');
      } finally {
        await svc.close();
      }
    });
  });
});
