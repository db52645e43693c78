import { expect } from 'chai';
import { detectBrand, findSensitiveAuthenticationData, normalisePan, validateExpiry } from '../../src/cards/pan.js';
import { AppError } from '../../src/errors/app-error.js';
import { TEST_PANS, spaced } from '../support/pans.js';

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).to.be.instanceOf(AppError);
    return (error as AppError).code;
  }
  throw new Error('expected an AppError');
}

describe('card numbers', () => {
  describe('when a scheme test PAN is given, then it is accepted and its brand detected', () => {
    for (const [brand, pans] of Object.entries(TEST_PANS)) {
      for (const pan of pans) {
        it(`${brand} ${pan.slice(0, 4)}…${pan.slice(-4)}`, () => {
          expect(normalisePan(pan)).to.equal(pan);
          expect(normalisePan(spaced(pan))).to.equal(pan);
          expect(detectBrand(pan)).to.equal(brand);
        });
      }
    }
  });

  it('when the PAN is written with dashes, then the digits are kept', () => {
    expect(normalisePan('4111-1111-1111-1111')).to.equal('4111111111111111');
  });

  describe('when the PAN is invalid, then PAN_INVALID and the number is not in the message', () => {
    const cases: [string, string][] = [
      ['Luhn failure', '4111111111111112'],
      ['11 digits', '41111111116'],
      ['20 digits', '41111111111111111113'],
      ['letters', '4111a11111111111'],
      ['double separator', '4111  1111 1111 1111'],
      ['trailing separator', '4111111111111111 '],
      ['leading separator', ' 4111111111111111'],
      ['dot separators', '4111.1111.1111.1111'],
      ['unicode digits', '４１１１１１１１１１１１１１１１'],
      ['empty', ''],
    ];
    for (const [name, pan] of cases) {
      it(name, () => {
        expect(codeOf(() => normalisePan(pan))).to.equal('PAN_INVALID');
        try {
          normalisePan(pan);
        } catch (error) {
          expect((error as Error).message).not.to.contain('4111');
        }
      });
    }
  });

  describe('brand detection by IIN range', () => {
    const cases: [string, string][] = [
      ['2221000000000000', 'mastercard'],
      ['2720990000000008', 'mastercard'],
      ['2721000000000005', 'unknown'],
      ['5000000000000000', 'unknown'],
      ['3400000000000009', 'amex'],
      ['6440000000000006', 'discover'],
      ['6500000000000003', 'discover'],
      ['3528000000000008', 'jcb'],
      ['3590000000000005', 'unknown'],
      ['9000000000000000', 'unknown'],
    ];
    for (const [iin, brand] of cases) {
      it(`${iin.slice(0, 4)} → ${brand}`, () => expect(detectBrand(iin)).to.equal(brand));
    }
  });

  describe('expiry (valid to the end of its month; up to 24 months past, 20 years ahead)', () => {
    const now = new Date('2026-11-22T12:00:00Z');
    it('when absent, then none', () => expect(validateExpiry(undefined, undefined, now)).to.equal(undefined));
    it('when current month, then accepted', () =>
      expect(validateExpiry(11, 2026, now)).to.deep.equal({ month: 11, year: 2026 }));
    it('when expired 24 months ago, then still accepted', () =>
      expect(validateExpiry(11, 2024, now)).to.not.equal(undefined));
    it('when expired 25 months ago, then EXPIRY_INVALID', () =>
      expect(codeOf(() => validateExpiry(10, 2024, now))).to.equal('EXPIRY_INVALID'));
    it('when more than 20 years ahead, then EXPIRY_INVALID', () =>
      expect(codeOf(() => validateExpiry(12, 2046, now))).to.equal('EXPIRY_INVALID'));
    it('when only the month is given, then EXPIRY_INVALID', () =>
      expect(codeOf(() => validateExpiry(5, undefined, now))).to.equal('EXPIRY_INVALID'));
  });

  describe('sensitive authentication data (PCI DSS 3.3)', () => {
    const cases: [unknown, string | undefined][] = [
      [{ pan: '4111111111111111', cvv: '123' }, '/cvv'],
      [{ pan: 'x', CVC2: '123' }, '/CVC2'],
      [{ card: { track_2: ';4111=...' } }, '/card/track_2'],
      [{ payment: { card: { 'pin-block': 'x' } } }, '/payment/card/pin-block'],
      [{ securityCode: '1234' }, '/securityCode'],
      [{ pan: '4111111111111111', expiryMonth: 1 }, undefined],
      [[{ ok: 1 }, { cvv: 1 }], '/1/cvv'],
      ['cvv', undefined],
    ];
    for (const [body, pointer] of cases) {
      it(`${JSON.stringify(body).slice(0, 50)} → ${pointer ?? 'clean'}`, () => {
        expect(findSensitiveAuthenticationData(body)).to.equal(pointer);
      });
    }
  });
});
