/**
 * Defence in depth: when the database's card-data guard refuses a row that the edge let through, the
 * client gets 422 CARD_NUMBER_NOT_ALLOWED, never a 500 (a bare-UUID Idempotency-Key reading as a card
 * number once made a secret rotation answer 500 this way).
 */
import { expect } from 'chai';
import { toAppError } from '../../src/http/problem.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

describe('card data refused by the database guard', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase({ migrated: true });
  });
  after(async () => db.close());

  it('when a guarded column receives a card number, then the write fails and the client is told 422 CARD_NUMBER_NOT_ALLOWED', async () => {
    const now = new Date();
    const error = await db
      .knex('idempotency_keys')
      .insert({
        scope: 'guard-test',
        key: 'guard-test-key',
        request_hash: 'abcdef',
        status: 0,
        response: JSON.stringify({ note: 'card 4111 1111 1111 1111' }),
        created_at: now,
        expires_at: now,
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error, 'the guard refused the row').to.not.equal(undefined);
    const problem = toAppError(error);
    expect(problem.code).to.equal('CARD_NUMBER_NOT_ALLOWED');
    expect(JSON.stringify(problem)).to.not.contain('4111');
    expect(await db.knex('idempotency_keys').where({ scope: 'guard-test' })).to.have.length(0);
  });

  it('when another check constraint fails, then it is not mistaken for card data', () => {
    const error = Object.assign(new Error('new row violates check constraint "points_positive"'), {
      code: '23514',
      constraint: 'points_positive',
    });
    expect(toAppError(error).code).to.equal('INTERNAL');
  });
});
