import { expect } from 'chai';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';

/**
 * Issue 23: a value outside an enum is refused with the values the contract allows, in the issue's
 * message (the code stays VALIDATION_FAILED); the value sent is never echoed.
 */
describe('validation problems: an enum lists its allowed values', function () {
  this.timeout(120_000);
  let svc: TestService;
  let admin: string;

  before(async () => {
    svc = await startTestService();
    admin = await signToken({ scope: 'loyalty:admin' });
  });
  after(() => svc.close());

  it('when a query parameter is not one of its enum, then 400 VALIDATION_FAILED names the allowed values and not the input', async () => {
    const res = await svc.request('GET', '/v1/admin/webhooks/inbox?state=parkedzz&provider=stripe', { token: admin });
    expect(res.status, res.text).to.equal(400);
    expect(res.body.code).to.equal('VALIDATION_FAILED');
    expect(res.body.errors).to.deep.equal([
      {
        pointer: '/query/state',
        message: 'must be one of "applied", "parked", "failed", "ignored", "rejected"',
      },
    ]);
    expect(res.text).not.to.contain('parkedzz');
  });
});
