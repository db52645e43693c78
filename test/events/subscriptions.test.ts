/**
 * Subscriptions: admin only, secrets shown once and sealed at rest, rotation with both secrets
 * signing during the overlap, and SSRF targets refused at creation (the real classification code,
 * fed by a fake DNS).
 */
import { expect } from 'chai';
import nock from 'nock';
import { classifyAddress, parseTargetUrl, TargetRefused } from '../../src/events/target-policy.js';
import { parseRetryAfter } from '../../src/events/dispatcher.js';
import { AppError } from '../../src/errors/app-error.js';
import { problemStatus } from '../../src/http/problem-statuses.js';
import { SubscriptionService } from '../../src/events/subscription-service.js';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { newShopper } from '../loyalty/support.js';
import { drain, dumpTables, fakeResolver, receiver, subscribe, TestClock, testDispatcher } from './support.js';

describe('outbound events: subscriptions', function () {
  this.timeout(120_000);
  let svc: TestService;
  let admin: string;

  before(async () => {
    nock.disableNetConnect();
    nock.enableNetConnect(/127\.0\.0\.1|localhost/);
    svc = await startTestService({ eventResolver: fakeResolver });
    admin = await signToken({ scope: 'loyalty:admin' });
  });
  after(async () => {
    await svc.close();
    nock.cleanAll();
    nock.enableNetConnect();
  });
  afterEach(() => nock.cleanAll());

  describe('access', () => {
    const calls: [string, string][] = [
      ['POST', '/v1/admin/subscriptions'],
      ['GET', '/v1/admin/subscriptions'],
      ['GET', '/v1/admin/subscriptions/sub_aaaaaaaaaaaaaaaaaaaaaaaaaa'],
      ['DELETE', '/v1/admin/subscriptions/sub_aaaaaaaaaaaaaaaaaaaaaaaaaa'],
      ['POST', '/v1/admin/subscriptions/sub_aaaaaaaaaaaaaaaaaaaaaaaaaa/secrets'],
      ['GET', '/v1/admin/subscriptions/sub_aaaaaaaaaaaaaaaaaaaaaaaaaa/deliveries'],
      ['GET', '/v1/admin/subscriptions/sub_aaaaaaaaaaaaaaaaaaaaaaaaaa/attempts'],
      [
        'POST',
        '/v1/admin/subscriptions/sub_aaaaaaaaaaaaaaaaaaaaaaaaaa/deliveries/msg_aaaaaaaaaaaaaaaaaaaaaaaaaa/replay',
      ],
    ];
    for (const [method, path] of calls) {
      it(`when ${method} ${path.replace(/_[a-z]{26}/g, '_…')} comes without loyalty:admin, then 403 INSUFFICIENT_SCOPE, and 401 with no token`, async () => {
        const json =
          method === 'POST' && path.endsWith('subscriptions')
            ? { url: 'https://crm.example.com/h', eventTypes: ['points.available'] }
            : undefined;
        for (const scope of ['loyalty:read loyalty:write loyalty:redeem', 'tokens:write tokens:read']) {
          const res = await svc.request(method, path, {
            token: await signToken({ scope }),
            ...(json === undefined ? {} : { json }),
          });
          expect(res.status, res.text).to.equal(403);
          expect(res.body.code).to.equal('INSUFFICIENT_SCOPE');
        }
        const shopperToken = await signToken({ scope: 'loyalty:read', shopperRef: 'shp_aaaaaaaaaaaaaaaaaaaaaaaaaa' });
        expect((await svc.request(method, path, { token: shopperToken })).status).to.equal(403);
        const anonymous = await svc.request(method, path, json === undefined ? {} : { json });
        expect(anonymous.status).to.equal(401);
        expect(anonymous.body.code).to.equal('TOKEN_MISSING');
      });
    }
  });

  describe('secrets', () => {
    it('when a subscription is created, then its secret is shown once, never by GET or list, and is stored only encrypted', async () => {
      const created = await svc.request('POST', '/v1/admin/subscriptions', {
        token: admin,
        json: {
          url: 'https://crm.example.com/once',
          eventTypes: ['points.available', 'shopper.merged'],
          description: 'CRM',
        },
      });
      expect(created.status, created.text).to.equal(201);
      const secret = created.body.secret as string;
      expect(secret).to.match(/^whsec_[A-Za-z0-9+/]{43}=$/);
      expect(created.body).to.include({ url: 'https://crm.example.com/once', state: 'active', description: 'CRM' });
      const id = created.body.id as string;
      const got = await svc.request('GET', `/v1/admin/subscriptions/${id}`, { token: admin });
      expect(got.status).to.equal(200);
      expect(got.body).to.not.have.property('secret');
      expect(got.body.eventTypes).to.deep.equal(['points.available', 'shopper.merged']);
      const listed = await svc.request('GET', '/v1/admin/subscriptions', { token: admin });
      expect(listed.text).to.not.contain(secret.slice(6));
      const dump = await dumpTables(svc.db.knex);
      expect(dump).to.contain(id);
      expect(dump).to.not.contain(secret.slice(6));
      expect(dump).to.not.contain(Buffer.from(secret.slice(6), 'base64').toString('hex'));
      expect(svc.logs()).to.not.contain(secret.slice(6));
      const audit = await svc.db.knex('audit_events').where({ action: 'events.subscription.created', resource: id });
      expect(audit).to.have.length(1);
    });

    it('when the same URL is subscribed again, then 409 SUBSCRIPTION_EXISTS names the first; once deleted (twice: 204 both times), it can be subscribed again', async () => {
      const first = await subscribe(svc, 'https://crm.example.com/again', ['points.available']);
      const again = await svc.request('POST', '/v1/admin/subscriptions', {
        token: admin,
        json: { url: 'https://crm.example.com/again', eventTypes: ['points.redeemed'] },
      });
      expect(again.status).to.equal(409);
      expect(again.body).to.include({ code: 'SUBSCRIPTION_EXISTS', subscriptionId: first.id });
      expect(again.text).to.not.contain('whsec_');
      for (let i = 0; i < 2; i++) {
        expect((await svc.request('DELETE', `/v1/admin/subscriptions/${first.id}`, { token: admin })).status).to.equal(
          204,
        );
      }
      expect((await svc.request('GET', `/v1/admin/subscriptions/${first.id}`, { token: admin })).status).to.equal(404);
      expect(await svc.db.knex('event_subscription_secrets').where({ subscription_id: first.id })).to.have.length(0);
      const second = await subscribe(svc, 'https://crm.example.com/again', ['points.available']);
      expect(second.id).to.not.equal(first.id);
    });

    it('when the secret is rotated, then both secrets sign every delivery during the overlap, and only the new one after it', async () => {
      const clock = new TestClock();
      const sub = await subscribe(svc, 'https://app.example.com/rotate', ['shopper.created']);
      const rotated = await svc.request('POST', `/v1/admin/subscriptions/${sub.id}/secrets`, {
        token: admin,
        json: { overlapSeconds: 60 },
      });
      expect(rotated.status, rotated.text).to.equal(201);
      const newSecret = rotated.body.secret as string;
      expect(newSecret).to.not.equal(sub.secret);
      expect((await svc.request('GET', `/v1/admin/subscriptions/${sub.id}`, { token: admin })).text).to.not.contain(
        newSecret.slice(6),
      );

      let expected = [sub.secret, newSecret];
      const hook = receiver('https://app.example.com', '/rotate', () => expected);
      await newShopper(svc, '4012888888881881');
      const dispatcher = testDispatcher(svc, clock);
      expect(await drain(dispatcher)).to.equal(1);
      expect(hook.rejected).to.deep.equal([]);
      expect(hook.received).to.have.length(1);
      expect(hook.received[0]?.headers['webhook-signature']?.split(' ')).to.have.length(2);

      clock.advance(61_000);
      expected = [newSecret];
      await newShopper(svc, '5555555555554444');
      expect(await drain(dispatcher)).to.equal(1);
      expect(hook.rejected).to.deep.equal([]);
      expect(hook.received[1]?.headers['webhook-signature']?.split(' ')).to.have.length(1);
    });

    it('when a rotation is retried with its Idempotency-Key, then 409 SECRET_ROTATION_REPEATED names the secret it made, no third secret is minted and the overlap is not restarted', async () => {
      const sub = await subscribe(svc, 'https://app.example.com/rotate-once', ['shopper.created']);
      const path = `/v1/admin/subscriptions/${sub.id}/secrets`;
      const rotate = (key?: string) =>
        svc.request('POST', path, {
          token: admin,
          json: { overlapSeconds: 3_600 },
          ...(key === undefined ? {} : { headers: { 'Idempotency-Key': key } }),
        });
      const secrets = () =>
        svc.db
          .knex('event_subscription_secrets')
          .where({ subscription_id: sub.id })
          .orderBy('created_at')
          .select('id', 'expires_at');

      const first = await rotate('rotate-2026-11-30-a');
      expect(first.status, first.text).to.equal(201);
      expect(first.body.secretId).to.match(/^whs_[a-z2-7]{26}$/);
      const before = await secrets();
      expect(before).to.have.length(2);

      const again = await rotate('rotate-2026-11-30-a');
      expect(again.status, again.text).to.equal(409);
      expect(again.headers.get('content-type')).to.match(/^application\/problem\+json/);
      expect(again.body).to.include({ code: 'SECRET_ROTATION_REPEATED', secretId: first.body.secretId });
      expect(again.text).to.not.contain('whsec_');
      expect(again.text).to.not.contain((first.body.secret as string).slice(6));
      // Nothing changed: still two secrets, the received one current, the old one's expiry as it was.
      expect(await secrets()).to.deep.equal(before);

      // Another key (or none) is another rotation.
      const other = await rotate('rotate-2026-11-30-b');
      expect(other.status, other.text).to.equal(201);
      expect(other.body.secretId).to.not.equal(first.body.secretId);
      expect((await rotate()).status).to.equal(201);
      expect(
        await svc.db.knex('audit_events').where({ action: 'events.subscription.secret-rotated', resource: sub.id }),
      ).to.have.length(3);
    });

    it('when the Idempotency-Key is a UUID whose middle groups read as a card number, then the rotation is made and replays like any other', async () => {
      // About one random UUID in 180 reads so; the edge accepts a bare UUID as sent, and the column
      // that remembers it must too (it answered 500 when the database guard refused the row).
      const sub = await subscribe(svc, 'https://app.example.com/rotate-uuid', ['shopper.created']);
      const rotate = () =>
        svc.request('POST', `/v1/admin/subscriptions/${sub.id}/secrets`, {
          token: admin,
          json: { overlapSeconds: 60 },
          headers: { 'Idempotency-Key': '0a1b2c3d-4111-1111-1111-1111abcdef00' },
        });
      const first = await rotate();
      expect(first.status, first.text).to.equal(201);
      const again = await rotate();
      expect(again.body).to.include({ code: 'SECRET_ROTATION_REPEATED', secretId: first.body.secretId });
      // Kept as its keyed digest, never as sent (src/keys/reference-digests.ts): no card number at rest.
      const remembered = await svc.db
        .knex('event_subscription_secrets')
        .where({ subscription_id: sub.id })
        .whereNotNull('rotation_key')
        .pluck('rotation_key');
      expect(remembered).to.have.length(1);
      expect(remembered[0]).to.match(/^~[A-Za-z0-9_-]{43}$/);
    });

    it('when an Idempotency-Key is malformed, then 400 VALIDATION_FAILED and no rotation', async () => {
      const sub = await subscribe(svc, 'https://app.example.com/rotate-bad-key', ['shopper.created']);
      const res = await svc.request('POST', `/v1/admin/subscriptions/${sub.id}/secrets`, {
        token: admin,
        headers: { 'Idempotency-Key': 'no spaces allowed' },
      });
      expect(res.status, res.text).to.equal(400);
      expect(res.body.code).to.equal('VALIDATION_FAILED');
      expect(await svc.db.knex('event_subscription_secrets').where({ subscription_id: sub.id })).to.have.length(1);
    });

    it('when subscription secrets exist, then the key inventory counts them under subscription-secret, none under pan-encryption', async () => {
      const rows = await svc.db.knex('event_subscription_secrets').count<{ n: string }[]>('* as n');
      expect(Number(rows[0]?.n)).to.be.greaterThan(0);
      const { subscriptionSecrets } = await import('../../src/events/subscription-secrets.js');
      const { legacySubscriptionSecrets } = await import('../../src/events/subscription-secrets.js');
      expect(subscriptionSecrets.purpose).to.equal('subscription-secret');
      const counts = await subscriptionSecrets.countByVersion(svc.db.knex);
      expect([...counts.values()].reduce((a, b) => a + b, 0)).to.equal(Number(rows[0]?.n));
      expect((await legacySubscriptionSecrets.countByVersion(svc.db.knex)).size).to.equal(0);
    });
  });

  describe('SSRF at creation', () => {
    const refused: [string, string][] = [
      ['http://crm.example.com/h', 'https-required'],
      ['https://user:pw@crm.example.com/h', 'credentials-in-url'],
      ['ftp://crm.example.com/h', 'url-invalid'],
      ['https://127.0.0.1/h', 'loopback'],
      ['https://[::1]/h', 'loopback'],
      ['https://localhost.invalid/h', 'unresolvable'],
      ['https://internal.example.com/h', 'private'],
      ['https://metadata.example.com/latest/meta-data', 'link-local'],
      ['https://mixed.example.com/h', 'private'],
      ['https://mapped.example.com/h', 'loopback'],
      ['https://[::ffff:10.1.2.3]/h', 'private'],
      ['https://ula.example.com/h', 'unique-local'],
      ['https://cgnat.example.com/h', 'carrier-grade-nat'],
      ['https://0.0.0.0/h', 'unspecified'],
      ['https://224.0.0.1/h', 'multicast'],
      ['https://[fe80::1]/h', 'link-local'],
      ['https://nat64.example.com/h', 'private'],
      ['https://[64:ff9b::a00:5]/h', 'private'],
      ['https://[2002:7f00:1::1]/h', 'loopback'],
      ['https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/h', 'reserved'],
      ['https://192.88.99.1/h', 'reserved'],
    ];
    for (const [url, reason] of refused) {
      it(`when the target is ${url}, then 422 WEBHOOK_TARGET_REFUSED (${reason}) and nothing is stored`, async () => {
        const res = await svc.request('POST', '/v1/admin/subscriptions', {
          token: admin,
          json: { url, eventTypes: ['points.available'] },
        });
        expect(res.status, res.text).to.equal(422);
        expect(res.body).to.include({ code: 'WEBHOOK_TARGET_REFUSED', reason });
        expect(res.text).to.not.contain(url);
        expect(await svc.db.knex('event_subscriptions').where({ url })).to.have.length(0);
      });
    }

    it('when a public address is classified, then it is accepted, and private ones in every notation are not', () => {
      const accepted = [
        '151.101.1.69',
        '8.8.8.8',
        '2a04:4e42::69',
        '172.32.0.1',
        '100.128.0.1',
        '2606:4700::1111',
        // A public IPv4 address behind a translator or tunnel stays public.
        '64:ff9b::808:808',
        '2002:808:808::1',
        '::ffff:8.8.8.8',
      ];
      for (const ok of accepted) {
        expect(classifyAddress(ok), ok).to.equal(undefined);
      }
      const table: [string, string][] = [
        ['10.255.255.255', 'private'],
        ['172.16.0.1', 'private'],
        ['172.31.255.254', 'private'],
        ['192.168.0.1', 'private'],
        ['127.8.9.10', 'loopback'],
        ['169.254.169.254', 'link-local'],
        ['100.127.255.255', 'carrier-grade-nat'],
        ['::ffff:7f00:1', 'loopback'],
        ['::ffff:169.254.169.254', 'link-local'],
        ['fc00::1', 'unique-local'],
        ['ff02::1', 'multicast'],
        ['255.255.255.255', 'reserved'],
        ['fe80::1%eth0', 'link-local'],
        ['not-an-address', 'url-invalid'],
        // IPv4 reached through a translator or tunnel is judged as that IPv4 address.
        ['64:ff9b::a00:1', 'private'],
        ['64:ff9b::a9fe:a9fe', 'link-local'],
        ['64:ff9b::127.0.0.1', 'loopback'],
        ['64:ff9b:1::1', 'reserved'],
        ['64:ff9b:1:a00:1::', 'reserved'],
        ['2002:a00:1::1', 'private'],
        ['2002:a9fe:a9fe::1', 'link-local'],
        ['2001::1', 'reserved'],
        ['2001:0:4136:e378:8000:63bf:f5ff:fffe', 'reserved'],
        ['::ffff:0:7f00:1', 'loopback'],
        ['::ffff:0:10.0.0.5', 'private'],
        ['::10.0.0.5', 'private'],
        ['::8.8.8.8', 'reserved'],
        // IPv4 special-purpose ranges.
        ['192.88.99.1', 'reserved'],
        ['198.18.0.1', 'reserved'],
        ['198.19.255.255', 'reserved'],
        ['240.0.0.1', 'reserved'],
        ['192.0.2.1', 'documentation'],
        ['198.51.100.7', 'documentation'],
        ['203.0.113.9', 'documentation'],
        // IPv6 outside global unicast, or a special-purpose block inside it.
        ['2001:db8::1', 'documentation'],
        ['3fff::1', 'documentation'],
        ['2001:2::1', 'reserved'],
        ['100::1', 'reserved'],
        ['4000::1', 'reserved'],
        ['1::', 'reserved'],
        ['fec0::1', 'reserved'],
      ];
      for (const [address, reason] of table) expect(classifyAddress(address), address).to.equal(reason);
    });

    it('when DNS does not answer at creation, then 422 WEBHOOK_TARGET_REFUSED (unresolvable) after the timeout, not a hung request', async () => {
      const service = new SubscriptionService({
        knex: svc.db.knex,
        keyRing: svc.service.keyRing,
        targets: { resolver: () => new Promise(() => undefined), allowHttp: false, allowPrivate: false },
        resolveTimeoutMs: 100,
      });
      let error: unknown;
      await service
        .create(
          { url: 'https://slow-dns.example.com/h', eventTypes: ['points.available'] },
          {
            subject: 'test-admin',
            origin: 'test',
          },
        )
        .catch((e: unknown) => (error = e));
      expect(error).to.be.instanceOf(AppError).and.include({ code: 'WEBHOOK_TARGET_REFUSED' });
      expect(problemStatus(error as AppError)).to.equal(422);
      expect((error as { extensions: unknown }).extensions).to.deep.equal({ reason: 'unresolvable' });
    });

    it('when development allows http and private targets, then only the URL form is checked', () => {
      expect(parseTargetUrl('http://localhost:3000/h', { allowHttp: true }).port).to.equal('3000');
      expect(() => parseTargetUrl('http://localhost:3000/h', { allowHttp: false }))
        .to.throw(TargetRefused)
        .with.property('reason', 'https-required');
    });

    const malformed: [string, Record<string, unknown>, number, string][] = [
      ['a NUL in the URL', { url: 'https://crm.example.com/a\u0000b' }, 400, 'VALIDATION_FAILED'],
      ['a newline in the URL', { url: 'https://crm.example.com/a\nb' }, 400, 'VALIDATION_FAILED'],
      ['a NUL in the description', { description: 'CRM\u0000' }, 400, 'VALIDATION_FAILED'],
      ['a C1 control in the description', { description: 'CRM\u0085' }, 400, 'VALIDATION_FAILED'],
      [
        'a URL of 2,000 non-ASCII characters (6,000 bytes normalised)',
        { url: `https://crm.example.com/${'é'.repeat(2_000)}` },
        422,
        'WEBHOOK_TARGET_REFUSED',
      ],
    ];
    for (const [what, fields, status, code] of malformed) {
      it(`when a subscription has ${what}, then ${status} ${code}, no 500, and nothing is stored`, async () => {
        const before = await svc.db.knex('event_subscriptions').count<{ n: string }[]>('* as n');
        const res = await svc.request('POST', '/v1/admin/subscriptions', {
          token: admin,
          json: { url: 'https://crm.example.com/ctl', eventTypes: ['points.available'], ...fields },
        });
        expect(res.status, res.text).to.equal(status);
        expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
        expect(res.body.code).to.equal(code);
        if (code === 'WEBHOOK_TARGET_REFUSED') expect(res.body.reason).to.equal('url-too-long');
        const after = await svc.db.knex('event_subscriptions').count<{ n: string }[]>('* as n');
        expect(after[0]?.n).to.equal(before[0]?.n);
      });
    }

    it('when control characters reach the service without the API schema, then VALIDATION_FAILED names the fields, not their values', async () => {
      const actor = { subject: 'test-admin', origin: 'test' };
      let error: unknown;
      await svc.service.subscriptions
        .create(
          { url: 'https://crm.example.com/x\u0000', eventTypes: ['points.available'], description: 'a\u0000' },
          actor,
        )
        .catch((e: unknown) => (error = e));
      expect(error).to.be.instanceOf(AppError).and.include({ code: 'VALIDATION_FAILED' });
      expect(problemStatus(error as AppError)).to.equal(400);
      expect((error as { extensions: unknown }).extensions).to.deep.equal({
        errors: [
          { pointer: '/body/url', message: 'must not contain control characters' },
          { pointer: '/body/description', message: 'must not contain control characters' },
        ],
      });
    });

    it('when a long non-ASCII URL fits the byte cap, then it is stored normalised, and the same receiver written another way is 409 SUBSCRIPTION_EXISTS', async () => {
      // 1,000 × "é" is 6,000 bytes percent-encoded: too long. 300 × "é" is 1,800: accepted, and its
      // index row is a 32-byte hash, whatever the URL's length.
      const path = 'é'.repeat(300);
      const created = await svc.request('POST', '/v1/admin/subscriptions', {
        token: admin,
        json: { url: `HTTPS://CRM.Example.COM:443/${path}`, eventTypes: ['points.available'] },
      });
      expect(created.status, created.text).to.equal(201);
      const href = `https://crm.example.com/${encodeURIComponent(path)}`;
      expect(created.body.url).to.equal(href);
      expect((await svc.db.knex('event_subscriptions').where({ id: created.body.id }).first()).url).to.equal(href);
      const again = await svc.request('POST', '/v1/admin/subscriptions', {
        token: admin,
        json: { url: `https://crm.example.com/${path}`, eventTypes: ['points.available'] },
      });
      expect(again.status, again.text).to.equal(409);
      expect(again.body).to.include({ code: 'SUBSCRIPTION_EXISTS', subscriptionId: created.body.id });
      // A 2,048-byte URL is accepted; one byte more is not.
      const base = 'https://crm.example.com/';
      const longest = `${base}${'a'.repeat(2_048 - base.length)}`;
      const fits = await svc.request('POST', '/v1/admin/subscriptions', {
        token: admin,
        json: { url: longest, eventTypes: ['points.available'] },
      });
      expect(fits.status, fits.text).to.equal(201);
      expect(parseTargetUrl(longest, { allowHttp: false }).href).to.have.length(2_048);
      expect(() => parseTargetUrl(`${longest}b`, { allowHttp: false }))
        .to.throw(TargetRefused)
        .with.property('reason', 'url-too-long');
    });

    it('when a card number is in the URL or description, then 422 CARD_NUMBER_NOT_ALLOWED', async () => {
      for (const json of [
        { url: 'https://crm.example.com/h?card=4111111111111111', eventTypes: ['points.available'] },
        {
          url: 'https://crm.example.com/h2',
          eventTypes: ['points.available'],
          description: 'card 4111 1111 1111 1111',
        },
      ]) {
        const res = await svc.request('POST', '/v1/admin/subscriptions', { token: admin, json });
        expect(res.status, res.text).to.equal(422);
        expect(res.body.code).to.equal('CARD_NUMBER_NOT_ALLOWED');
        expect(res.text).to.not.contain('4111111111111111');
      }
    });
  });

  describe('Retry-After', () => {
    it('when Retry-After is seconds or an HTTP date, then it is read as a delay; anything else is ignored', () => {
      const now = new Date('2026-11-30T10:00:00Z');
      expect(parseRetryAfter('120', now)).to.equal(120_000);
      expect(parseRetryAfter('Mon, 30 Nov 2026 10:01:30 GMT', now)).to.equal(90_000);
      expect(parseRetryAfter('Mon, 30 Nov 2026 09:00:00 GMT', now)).to.equal(0);
      expect(parseRetryAfter('soon', now)).to.equal(undefined);
      expect(parseRetryAfter('-5', now)).to.equal(undefined);
      expect(parseRetryAfter(undefined, now)).to.equal(undefined);
    });
  });
});
