import { expect } from 'chai';
import { signToken } from '../support/auth.js';
import { startHttpTestApp, type HttpTestApp } from '../support/http-test-app.js';

const validThing = JSON.stringify({ name: 'Coffee', amount: 1 });

describe('HTTP layer: scopes declared in the contract', () => {
  let app: HttpTestApp;

  before(async () => {
    app = await startHttpTestApp();
  });
  after(() => app.close());

  const asScopes = async (scope: string | undefined) => (scope === undefined ? signToken() : signToken({ scope }));

  describe('when an operation requires one scope (createThing: a:write)', () => {
    const cases: [string, string | undefined, number][] = [
      ['the token has exactly that scope', 'a:write', 201],
      ['the token has it among others', 'a:read a:write b:other', 201],
      ['the token has another scope only', 'a:read', 403],
      ['the token has a longer scope that starts the same', 'a:writer', 403],
      ['the token has a scope that differs in case', 'A:WRITE', 403],
      ['the token has an empty scope claim', '', 403],
      ['the token has no scope claim at all', undefined, 403],
    ];
    for (const [name, scope, status] of cases) {
      it(`when ${name}, then ${status}`, async () => {
        const res = await app.request('POST', '/things/thg_abcd', {
          token: await asScopes(scope),
          body: validThing,
          headers: { 'content-type': 'application/json' },
        });
        expect(res.status, res.text).to.equal(status);
        if (status === 403) {
          expect(res.body.code).to.equal('INSUFFICIENT_SCOPE');
          expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
          expect(res.headers.get('www-authenticate')).to.equal('Bearer error="insufficient_scope", scope="a:write"');
        }
      });
    }
  });

  describe('when an operation offers two alternatives (getThing: a:read, or a:admin and a:audit)', () => {
    const cases: [string, string, number][] = [
      ['the token satisfies the first', 'a:read', 200],
      ['the token satisfies the second', 'a:audit a:admin', 200],
      ['the token satisfies both', 'a:read a:admin a:audit', 200],
      ['the token has only half of the second', 'a:admin', 403],
      ['the token has the other half of the second', 'a:audit', 403],
      ['the token has unrelated scopes', 'a:write b:read', 403],
    ];
    for (const [name, scope, status] of cases) {
      it(`when ${name}, then ${status}`, async () => {
        const res = await app.request('GET', '/things/thg_abcd', { token: await signToken({ scope }) });
        expect(res.status, res.text).to.equal(status);
        if (status === 403) {
          expect(res.body.code).to.equal('INSUFFICIENT_SCOPE');
          expect(res.body.detail).to.contain('a:read | a:admin a:audit');
        } else {
          expect(res.body).to.deep.equal({ thingId: 'thg_abcd' });
        }
      });
    }
  });

  describe('order of checks: who, then what may they do, then what did they send', () => {
    it('when no token is sent to a scoped operation, then 401 TOKEN_MISSING, not 403', async () => {
      const res = await app.request('POST', '/things/thg_abcd', {
        body: validThing,
        headers: { 'content-type': 'application/json' },
      });
      expect(res.status).to.equal(401);
      expect(res.body.code).to.equal('TOKEN_MISSING');
    });

    it('when the token lacks the scope and the body is malformed, then 403 before the body is read', async () => {
      const res = await app.request('POST', '/things/thg_abcd', {
        token: await signToken({ scope: 'a:read' }),
        body: '{not json',
        headers: { 'content-type': 'application/json' },
      });
      expect(res.status).to.equal(403);
      expect(res.body.code).to.equal('INSUFFICIENT_SCOPE');
    });

    it('when the anonymous caller sends a malformed body, then 401 before the body is read', async () => {
      const res = await app.request('POST', '/things/thg_abcd', {
        body: '{not json',
        headers: { 'content-type': 'application/json' },
      });
      expect(res.status).to.equal(401);
      expect(res.body.code).to.equal('TOKEN_MISSING');
    });
  });
});
