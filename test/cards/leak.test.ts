/**
 * The non-negotiable: no PAN in clear anywhere at rest or in logs. A few hundred PANs go through every
 * vault endpoint (valid and invalid requests, PANs in odd places); then every table is exported and,
 * on PostgreSQL, a full pg_dump taken, and all of it plus the log output is scanned for every PAN,
 * with and without separators.
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { signToken } from '../support/auth.js';
import { usingPostgres } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { ALL_TEST_PANS, generatePans, spaced } from '../support/pans.js';
import nock from 'nock';
import { ALL_TYPES, drain, fakeResolver, receiver, subscribe, TestClock, testDispatcher } from '../events/support.js';

function hexOf(value: unknown): unknown {
  return Buffer.isBuffer(value) ? `\\x${value.toString('hex')}` : value;
}

export async function exportAllTables(svc: TestService): Promise<string> {
  const tables = (await svc.db
    .knex('information_schema.tables')
    .where({ table_schema: 'public', table_type: 'BASE TABLE' })
    .pluck('table_name')) as string[];
  expect(tables).to.include.members([
    'cards',
    'card_identifiers',
    'identifier_fingerprints',
    'audit_events',
    'data_keys',
    'outbound_events',
    'outbound_deliveries',
    'event_subscription_secrets',
  ]);
  const parts: string[] = [];
  for (const table of tables) {
    const rows = (await svc.db.knex(table).select('*')) as Record<string, unknown>[];
    parts.push(
      `-- ${table}\n${JSON.stringify(rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, hexOf(v)]))))}`,
    );
  }
  return parts.join('\n');
}

export function findPans(haystack: string, pans: readonly string[]): string[] {
  return pans.filter(
    (pan) =>
      haystack.includes(pan) ||
      haystack.includes(spaced(pan)) ||
      haystack.includes(pan.replace(/(\d{4})(?=\d)/g, '$1-')),
  );
}

describe('no PAN at rest or in logs', function () {
  this.timeout(180_000);
  let svc: TestService;
  const pans = [...ALL_TEST_PANS, ...generatePans(300)];
  let sentEvents = '';

  before(async () => {
    nock.disableNetConnect();
    nock.enableNetConnect(/127\.0\.0\.1|localhost/);
    svc = await startTestService({
      env: await testEnv({
        DETOKENISE_ENABLED: 'true',
        DETOKENISE_RATE_LIMIT_PER_MINUTE: '1000',
        // Hundreds of first sightings from one client: the budget is not what this test is about.
        CARD_FIRST_SIGHTINGS_PER_MINUTE: '100000',
        CARD_FIRST_SIGHTINGS_BURST: '100000',
      }),
      eventResolver: fakeResolver,
    });
    // A subscriber of every event: what it is sent is scanned too.
    const sub = await subscribe(svc, 'https://crm.example.com/leak', ALL_TYPES);
    const hook = receiver('https://crm.example.com', '/leak', () => [sub.secret]);
    const writer = await signToken({ scope: 'tokens:write tokens:read tokens:detokenise' });
    let i = 0;
    for (const pan of pans) {
      i++;
      const form = i % 3 === 0 ? spaced(pan) : pan;
      const created = await svc.request('POST', '/v1/tokens', {
        token: writer,
        json: { pan: form, expiryMonth: 1 + (i % 12), expiryYear: 2030 },
      });
      expect(created.status, `tokenise #${i}`).to.be.oneOf([200, 201]);
      const token = created.body.token as string;
      if (i % 5 === 0) await svc.request('GET', `/v1/tokens/${token}`, { token: writer });
      if (i % 7 === 0)
        await svc.request('POST', `/v1/tokens/${token}/detokenise`, { token: writer, json: { reason: 'leak test' } });
      if (i % 11 === 0) {
        const par = `V${String(i).padStart(4, '0')}${'C'.repeat(24)}`;
        const parCard = await svc.request('POST', '/v1/tokens', { token: writer, json: { par } });
        await svc.request('POST', `/v1/tokens/${parCard.body.token as string}/identifiers`, {
          token: writer,
          json: { pan },
        });
      }
      if (i % 13 === 0) {
        // PANs where they do not belong: SAD beside it, unknown fields, bad expiry, query, headers, path.
        await svc.request('POST', '/v1/tokens', { token: writer, json: { pan, cvv: '123', track2: `;${pan}=2512?` } });
        await svc.request('POST', '/v1/tokens', { token: writer, json: { pan, [pan]: pan, note: pan } });
        await svc.request('POST', '/v1/tokens', { token: writer, json: { pan, expiryMonth: 2 } });
        await svc.request('POST', `/v1/tokens?pan=${pan}`, {
          token: writer,
          json: { pan },
          headers: { 'x-request-id': pan, 'x-card': pan },
        });
        await svc.request('GET', `/v1/tokens/${pan}`, { token: writer });
        await svc.request('POST', `/v1/tokens/${token}/detokenise`, { token: writer, json: { reason: `card ${pan}` } });
        await svc.request('POST', '/v1/tokens', { json: { pan } });
        await svc.request('POST', '/v1/tokens', {
          token: writer,
          body: `{"pan":"${pan}",`,
          headers: { 'content-type': 'application/json' },
        });
      }
    }
    await drain(testDispatcher(svc, new TestClock()), 200);
    expect(hook.rejected).to.deep.equal([]);
    expect(hook.received.length).to.be.greaterThan(300);
    sentEvents = hook.received.map((e) => e.body).join('\n');
  });

  it('when the events sent to subscribers are scanned, then no PAN appears in them', () => {
    expect(sentEvents).to.contain('shopper.created');
    expect(findPans(sentEvents, pans)).to.deep.equal([]);
  });
  after(async () => {
    await svc.close();
    nock.cleanAll();
    nock.enableNetConnect();
  });

  it('when every table is exported, then no PAN appears in it, with or without separators', async () => {
    const dump = await exportAllTables(svc);
    expect(dump.length).to.be.greaterThan(10_000);
    expect(findPans(dump, pans)).to.deep.equal([]);
  });

  it('when the PostgreSQL database is dumped with pg_dump, then no PAN appears in it', function () {
    if (!usingPostgres) this.skip();
    const dump = execFileSync('pg_dump', ['--no-owner', svc.db.url as string], {
      maxBuffer: 512 * 1024 * 1024,
    }).toString('utf8');
    expect(dump).to.contain('CREATE TABLE public.cards');
    expect(findPans(dump, pans)).to.deep.equal([]);
  });

  it('when the log output is scanned, then no PAN appears in it', () => {
    const logs = svc.logs();
    expect(logs).to.contain('"operationId":"createToken"');
    expect(findPans(logs, pans)).to.deep.equal([]);
  });

  it('when the scan is pointed at a place that does hold PANs, then it finds them (the scan can fail)', () => {
    expect(findPans(`x ${spaced(pans[3]!)} y`, pans)).to.deep.equal([pans[3]]);
  });
});
