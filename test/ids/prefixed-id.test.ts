import crypto from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';
import { expect } from 'chai';
import { luhnValid } from '../../src/cards/luhn.js';
import { isCardToken, isId, isShopperRef, newId, type IdPrefix } from '../../src/ids/prefixed-id.js';

const PREFIXES: readonly IdPrefix[] = ['tok', 'shp', 'pay', 'evt', 'red', 'aud', 'req', 'cid'];

/**
 * Replaces node:crypto's randomBytes for the duration of `fn`, so that the draws newId makes are
 * chosen by the test. `syncBuiltinESMExports` carries the change into ESM named imports.
 */
function withRandomBytes<T>(draws: Buffer[], fn: () => T): { result: T; calls: number } {
  const original = crypto.randomBytes;
  let calls = 0;
  (crypto as { randomBytes: unknown }).randomBytes = (size: number): Buffer => {
    const next = draws[calls++];
    if (next === undefined || next.length !== size) throw new Error(`unexpected draw ${calls} of ${size} bytes`);
    return next;
  };
  syncBuiltinESMExports();
  try {
    return { result: fn(), calls };
  } finally {
    (crypto as { randomBytes: unknown }).randomBytes = original;
    syncBuiltinESMExports();
  }
}

/** 26 bytes whose low five bits pick these alphabet positions (a=0 … z=25, 2=26 … 7=31). */
function draw(chars: string): Buffer {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  expect(chars).to.have.length(26);
  return Buffer.from([...chars].map((c) => alphabet.indexOf(c) + 32 * 3)); // high bits ignored
}

describe('prefixed ids', () => {
  describe('when an id is made, then it has the prefix and 26 base32 characters', () => {
    for (const prefix of PREFIXES) {
      it(`when the prefix is ${prefix}, then the id is ${prefix}_ + [a-z2-7]{26}`, () => {
        const id = newId(prefix);
        expect(id).to.match(new RegExp(`^${prefix}_[a-z2-7]{26}$`));
        expect(isId(prefix, id)).to.equal(true);
      });
    }
  });

  it('when 10,000 ids are made, then all are distinct and none holds a 12+ digit or PAN-like run', () => {
    const ids = new Set<string>();
    for (let i = 0; i < 10_000; i++) ids.add(newId('shp'));
    expect(ids.size).to.equal(10_000);
    for (const id of ids) {
      expect(id).not.to.match(/\d{12}/);
      for (const run of id.match(/\d{13,19}/g) ?? []) expect(luhnValid(run)).to.equal(false);
    }
  });

  describe('when the random draw would hold a long digit run, then it is drawn again', () => {
    it('when the first draw is all digits, then the second draw is used', () => {
      const { result, calls } = withRandomBytes([draw('2'.repeat(26)), draw('a'.repeat(26))], () => newId('tok'));
      expect(result).to.equal(`tok_${'a'.repeat(26)}`);
      expect(calls).to.equal(2);
    });

    it('when the draw holds exactly 12 digits in a row, then it is drawn again', () => {
      const twelve = `ab${'234567234567'}${'c'.repeat(12)}`;
      const { result, calls } = withRandomBytes([draw(twelve), draw('b'.repeat(26))], () => newId('shp'));
      expect(result).to.equal(`shp_${'b'.repeat(26)}`);
      expect(calls).to.equal(2);
    });

    it('when the draw holds 11 digits in a row, then it is kept', () => {
      const eleven = `ab${'23456723456'}${'c'.repeat(13)}`;
      const { result, calls } = withRandomBytes([draw(eleven)], () => newId('shp'));
      expect(result).to.equal(`shp_${eleven}`);
      expect(calls).to.equal(1);
    });
  });

  describe('when a string is checked, then only well-formed ids of that type pass', () => {
    const shopper = newId('shp');
    const cases: [string, string, boolean][] = [
      ['a fresh shopper reference', shopper, true],
      ['the documented example', 'shp_mfrggzdfmztwq2lknnwg23tpob', true],
      ['a card token', newId('tok'), false],
      ['upper case', shopper.toUpperCase(), false],
      ['one character short', shopper.slice(0, -1), false],
      ['one character long', `${shopper}a`, false],
      ['a digit outside base32 (1)', `shp_1${shopper.slice(5)}`, false],
      ['a PAN after the prefix', 'shp_4111111111111111', false],
      ['surrounding whitespace', ` ${shopper}`, false],
      ['no prefix', shopper.slice(4), false],
    ];
    for (const [name, value, ok] of cases) {
      it(`when it is ${name}, then isShopperRef is ${ok}`, () => {
        expect(isShopperRef(value)).to.equal(ok);
      });
    }

    it('when a card token is checked, then isCardToken accepts it and rejects a shopper reference', () => {
      expect(isCardToken(newId('tok'))).to.equal(true);
      expect(isCardToken(shopper)).to.equal(false);
    });
  });
});
