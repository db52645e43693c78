import { expect } from 'chai';
import nock from 'nock';
import { signToken, testJwks } from '../support/auth.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';

const IDP = 'https://idp.test.example';
const JWKS_PATH = '/jwks.json';

/** The service trusting a remote JWKS instead of static keys. */
async function startWithRemoteJwks(): Promise<TestService> {
  return startTestService({
    env: await testEnv({ AUTH_PUBLIC_KEYS: undefined, AUTH_JWKS_URL: `${IDP}${JWKS_PATH}` }),
  });
}

describe('authentication: keys from a remote JWKS (network mocked)', () => {
  let svc: TestService | undefined;

  before(() => {
    nock.disableNetConnect();
    nock.enableNetConnect(/127\.0\.0\.1|localhost/);
  });
  afterEach(async () => {
    nock.cleanAll();
    await svc?.close();
    svc = undefined;
  });
  after(() => {
    nock.enableNetConnect();
  });

  it('when a valid token arrives, then the JWKS is fetched once and cached for the next request', async () => {
    const jwks = nock(IDP)
      .get(JWKS_PATH)
      .once()
      .reply(200, await testJwks(), { 'content-type': 'application/json' });
    svc = await startWithRemoteJwks();
    expect(jwks.isDone(), 'the JWKS is fetched lazily, not at start-up').to.equal(false);

    const first = await svc.request('GET', '/v1/whoami', { token: await signToken({ scope: 'a:read' }) });
    expect(first.status, first.text).to.equal(200);
    expect(first.body.scopes).to.deep.equal(['a:read']);
    expect(jwks.isDone()).to.equal(true);

    // A second fetch would find no interceptor and no network: it could only fail.
    const second = await svc.request('GET', '/v1/whoami', { token: await signToken({ scope: 'b:write' }) });
    expect(second.status, second.text).to.equal(200);
    expect(second.body.scopes).to.deep.equal(['b:write']);
    expect(nock.isDone()).to.equal(true);
    expect(nock.pendingMocks()).to.deep.equal([]);
  });

  it('when the JWKS endpoint answers 500, then 503 AUTH_KEYS_UNAVAILABLE, not a 401 blaming the caller', async () => {
    const jwks = nock(IDP).get(JWKS_PATH).reply(500, 'upstream exploded');
    svc = await startWithRemoteJwks();
    const res = await svc.request('GET', '/v1/whoami', { token: await signToken() });
    expect(res.status, res.text).to.equal(503);
    expect(res.body.code).to.equal('AUTH_KEYS_UNAVAILABLE');
    expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
    expect(res.text).not.to.contain('upstream exploded');
    expect(jwks.isDone()).to.equal(true);
  });

  it('when the JWKS endpoint cannot be reached, then 503 AUTH_KEYS_UNAVAILABLE', async () => {
    nock(IDP).get(JWKS_PATH).replyWithError({ code: 'ECONNREFUSED', message: 'connect ECONNREFUSED' });
    svc = await startWithRemoteJwks();
    const res = await svc.request('GET', '/v1/whoami', { token: await signToken() });
    expect(res.status, res.text).to.equal(503);
    expect(res.body.code).to.equal('AUTH_KEYS_UNAVAILABLE');
  });

  it('when the JWKS endpoint answers something that is not a key set, then 503 AUTH_KEYS_UNAVAILABLE', async () => {
    nock(IDP).get(JWKS_PATH).reply(200, { keys: 'nope' }, { 'content-type': 'application/json' });
    svc = await startWithRemoteJwks();
    const res = await svc.request('GET', '/v1/whoami', { token: await signToken() });
    expect(res.status, res.text).to.equal(503);
    expect(res.body.code).to.equal('AUTH_KEYS_UNAVAILABLE');
  });

  it('when the token names a kid the JWKS does not have, then 401 TOKEN_KEY_UNKNOWN', async () => {
    // jose refetches once on an unknown kid (then cools down), so the endpoint may be asked twice.
    nock(IDP)
      .get(JWKS_PATH)
      .times(2)
      .reply(200, await testJwks(), { 'content-type': 'application/json' });
    svc = await startWithRemoteJwks();
    const res = await svc.request('GET', '/v1/whoami', { token: await signToken({ kid: 'not-published' }) });
    expect(res.status, res.text).to.equal(401);
    expect(res.body.code).to.equal('TOKEN_KEY_UNKNOWN');
  });

  it('when the token is malformed, then the JWKS is not fetched at all', async () => {
    const jwks = nock(IDP)
      .get(JWKS_PATH)
      .reply(200, await testJwks());
    svc = await startWithRemoteJwks();
    const res = await svc.request('GET', '/v1/whoami', { headers: { authorization: 'Bearer not-a-jwt' } });
    expect(res.body.code).to.equal('TOKEN_MALFORMED');
    expect(jwks.isDone()).to.equal(false);
  });
});
