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
      ['with 12 digits (the vault accepts 12-digit PANs)', 'id 411111111117', 'id [PAN …1117]'],
      ['with 13 digits', 'n=4111111111119', 'n=[PAN …1119]'],
      ['grouped by dots', 'ref 5105.1051.0510.5100.', 'ref [PAN …5100].'],
      ['grouped by slashes', '6011/0009/9013/9424', '[PAN …9424]'],
      ['grouped by underscores', 'x_4111_1111_1111_1111_y', 'x_[PAN …1111]_y'],
      ['one digit per group, mixed separators', '4.1-1/1_1 1.1-1/1_1 1.1-1/1_1 1', '[PAN …1111]'],
      ['behind a short number in the same run', 'ref 12 4111 1111 1111 1111', 'ref 12 [PAN …1111]'],
      ['as track 1 data', '%B4111111111111111^DOE/JANE^2512101000000?', '[TRACK …1111]'],
      ['as track 2 data', ';4111111111111111=25121010000000000000?', '[TRACK …1111]'],
      ['as track 2 data with a D separator', '4111111111111111D2512101', '[TRACK …1111]'],
      ['with 19 digits', 'n=4111111111111111110', 'n=[PAN …1110]'],
      ['in full-width digits (NFKC)', 'card ４１１１ １１１１ １１１１ １１１１ x', 'card [PAN …1111] x'],
      ['in mathematical bold digits (NFKC)', 'card 𝟓𝟓𝟓𝟓𝟓𝟓𝟓𝟓𝟓𝟓𝟓𝟓𝟒𝟒𝟒𝟒', 'card [PAN …4444]'],
    ];
    for (const [name, input, expected] of cases) {
      it(`when it is ${name}, then it is masked`, () => {
        expect(maskPans(input)).to.equal(expected);
      });
    }
  });

  describe('when a digit run is longer than 19 digits or a PAN is glued to other digits, then it is masked whole', () => {
    const cases: [string, string][] = [
      ['20 digits holding a PAN', '41111111111111111000'],
      ['a PAN between other digits', '99994111111111111111'],
      ['a long Luhn-invalid run', '1234567890123456789012345'],
      ['a long run grouped by dashes', '4111-1111-1111-1111-1111'],
      ['a 16-digit PAN with a 3-digit CVC glued to it (19 digits)', '4111111111111111123'],
      ['a 15-digit Amex PAN with 4 digits glued to it (19 digits)', '3782822463100051234'],
      ['a 16-digit PAN behind one glued digit (17 digits)', '14111111111111111'],
      ['a 16-digit PAN with two digits glued to it (18 digits)', '555555555555444499'],
    ];
    for (const [name, run] of cases) {
      it(`when it is ${name}, then it becomes [REDACTED]`, () => {
        expect(maskPans(`x ${run} y`)).to.equal('x [REDACTED] y');
      });
    }
  });

  describe('when digits cannot be a PAN, then they are kept readable', () => {
    const cases: [string, string][] = [
      ['a 16-digit Luhn-invalid run', 'ref 4111111111111112'],
      ['a 13-digit Luhn-invalid run', 'ref 4111111111118'],
      ['an amount', 'amount 1234567.89 EUR'],
      ['a timestamp', '2026-11-22T20:40:30.739Z'],
      ['a port and a duration', '127.0.0.1:5432 took 12.5 ms'],
      ['no digits at all', 'nothing to see here'],
      ['digits broken by letters', 'tok_4111a1111b1111c1111'],
      ['an 11-digit Luhn-valid run', 'n 41111111116'],
      ['full-width digits that are no PAN (left as written)', 'n ４１１１ date ２０２６'],
      ['a unix-ms timestamp (13 digits: no anchored windows)', 'at 1796000000000'],
      ['a migration timestamp (14 digits: no anchored windows)', '20261206000100_card_data_guard'],
      ['a 17-digit run without a Luhn-valid 15- or 16-digit end', 'id 12345678901234567'],
    ];
    for (const [name, text] of cases) {
      it(`when it is ${name}, then it is unchanged`, () => {
        expect(maskPans(text)).to.equal(text);
      });
    }
  });
});
