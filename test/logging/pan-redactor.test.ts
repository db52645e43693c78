import { expect } from 'chai';
import { luhnValid } from '../../src/cards/luhn.js';
import { maskPans } from '../../src/logging/pan-redactor.js';
import { ALL_TEST_PANS } from '../support/pans.js';

describe('PAN masking (maskPans)', () => {
  describe('when a test card number appears, then it is masked to its last four digits', () => {
    for (const pan of ALL_TEST_PANS) {
      it(`when ${pan.slice(0, 6)}… is logged, then only …${pan.slice(-4)} remains`, () => {
        expect(luhnValid(pan)).to.equal(true);
        const masked = maskPans(`{"msg":"card ${pan} declined"}`);
        expect(masked).to.equal(`{"msg":"card [PAN …${pan.slice(-4)}] declined"}`);
        expect(masked).not.to.contain(pan.slice(0, 12));
      });
    }
  });

  describe('when a card number is written with separators or inside other text, then it is masked', () => {
    const cases: [string, string, string][] = [
      ['grouped by spaces', 'pan 4111 1111 1111 1111 end', 'pan [PAN …1111] end'],
      ['grouped by dashes', 'pan=4111-1111-1111-1111;', 'pan=[PAN …1111];'],
      ['Amex grouping 4-6-5', 'amex 3782 822463 10005', 'amex [PAN …0005]'],
      ['mixed separators', '5555-5555 5555-4444', '[PAN …4444]'],
      ['glued to letters', 'card4111111111111111x', 'card[PAN …1111]x'],
      ['as a JSON property name', '{"5555555555554444":1}', '{"[PAN …4444]":1}'],
      ['in a URL', '/v1/cards/4111111111111111?x=1', '/v1/cards/[PAN …1111]?x=1'],
      ['twice in one line', '4111111111111111 and 5555555555554444', '[PAN …1111] and [PAN …4444]'],
      ['with 13 digits', 'n=4111111111119', 'n=[PAN …1119]'],
      ['with 19 digits', 'n=4111111111111111110', 'n=[PAN …1110]'],
    ];
    for (const [name, input, expected] of cases) {
      it(`when it is ${name}, then it is masked`, () => {
        expect(maskPans(input)).to.equal(expected);
      });
    }
  });

  describe('when a digit run is longer than 19 digits, then it is masked whole (a PAN may hide inside)', () => {
    const cases: [string, string][] = [
      ['20 digits holding a PAN', '41111111111111111000'],
      ['a PAN between other digits', '99994111111111111111'],
      ['a long Luhn-invalid run', '1234567890123456789012345'],
      ['a long run grouped by dashes', '4111-1111-1111-1111-1111'],
    ];
    for (const [name, run] of cases) {
      it(`when it is ${name}, then it becomes [REDACTED]`, () => {
        expect(maskPans(`x ${run} y`)).to.equal('x [REDACTED] y');
      });
    }
  });

  describe('when digits cannot be a PAN, then they are kept readable', () => {
    const cases: [string, string][] = [
      ['a 12-digit Luhn-valid run (too short for a PAN)', 'id 411111111117'],
      ['a 16-digit Luhn-invalid run', 'ref 4111111111111112'],
      ['a 13-digit Luhn-invalid run', 'ref 4111111111118'],
      ['an amount', 'amount 1234567.89 EUR'],
      ['a timestamp', '2026-11-22T20:40:30.739Z'],
      ['a port and a duration', '127.0.0.1:5432 took 12.5 ms'],
      ['no digits at all', 'nothing to see here'],
    ];
    for (const [name, text] of cases) {
      it(`when it is ${name}, then it is unchanged`, () => {
        expect(maskPans(text)).to.equal(text);
      });
    }
  });
});
