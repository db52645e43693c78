/**
 * The key-state reconciliation's stamps (pure): a version created active (the first version of a
 * purpose) has its activated_at compared with its creation entry like published_at, so moving it to
 * hide an overdue key is a finding (attacker review M1).
 */
import { expect } from 'chai';
import { compareRows, trailStates } from '../../src/keys/key-state-reconciliation.js';

const created = new Date('2025-01-01T00:00:00Z');
const trail = trailStates([
  { seq: 1, action: 'key.created', purpose: 'pan-encryption', version: 1, at: created, details: { state: 'active' } },
]);
const row = (activatedAt: Date) => ({
  purpose: 'pan-encryption',
  version: 1,
  state: 'active',
  published_at: created,
  activated_at: activatedAt,
  retired_at: null,
  destroyed_at: null,
});

describe('key-state reconciliation: stamps of a version created active', () => {
  it('when its activated_at is its creation time, then no finding', () => {
    expect(compareRows([row(created)] as never, trail)).to.deep.equal([]);
  });

  it('when an insider moves its activated_at (to restart its cryptoperiod), then it is a finding', () => {
    const findings = compareRows([row(new Date('2026-12-01T00:00:00Z'))] as never, trail);
    expect(findings).to.have.length(1);
    expect(findings[0]?.problem).to.match(/activated_at 2026-12-01T00:00:00.000Z differs/);
  });
});
