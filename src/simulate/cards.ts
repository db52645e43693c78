/**
 * The card a simulated delivery is about, as `--card` names it: a PAN (only the card schemes' and
 * the gateways' published test numbers: the simulator refuses any other, so a real card number
 * pasted by mistake is never sent), a card token (`tok_…`) or an EMVCo PAR (29 upper-case
 * alphanumerics). Output names a card by brand and last four only.
 */
import { luhnValid } from '../card-data/card-data-guard.js';

/** Published test PANs: Visa, Mastercard, Amex, Discover and JCB's, and Adyen's and Stripe's test cards. */
export const TEST_PANS: Readonly<Record<string, readonly string[]>> = {
  visa: ['4111111111111111', '4242424242424242', '4012888888881881', '4000056655665556', '4166676667666746'],
  mastercard: ['5555555555554444', '5105105105105100', '2223003122003222', '5555341244441115', '2222400070000005'],
  amex: ['378282246310005', '370000000000002'],
  discover: ['6011111111111117'],
  jcb: ['3530111333300000', '3566002020360505'],
};

export const DEFAULT_TEST_PAN = '4111111111111111';

export type SimulatedCard =
  | { readonly kind: 'pan'; readonly pan: string; readonly brand: string; readonly last4: string }
  | { readonly kind: 'token'; readonly token: string }
  | { readonly kind: 'par'; readonly par: string };

const TOKEN = /^tok_[a-z2-7]{26}$/;
const PAR = /^[A-Z0-9]{29}$/;

/** Parses `--card`; throws a one-line reason (never echoing the digits) when it is none of the three. */
export function parseCard(value: string): SimulatedCard {
  if (TOKEN.test(value)) return { kind: 'token', token: value };
  if (PAR.test(value)) return { kind: 'par', par: value };
  const digits = value.replace(/[ -]/g, '');
  if (/^\d{12,19}$/.test(digits)) {
    const brand = Object.keys(TEST_PANS).find((b) => TEST_PANS[b]?.includes(digits));
    if (brand === undefined || !luhnValid(digits)) {
      throw new Error(
        `--card: a PAN ending ${digits.slice(-4)} is not a published test card number; the simulator sends only ` +
          `test PANs (${DEFAULT_TEST_PAN}, 5555555555554444, 378282246310005, …), card tokens (tok_…) or PARs`,
      );
    }
    return { kind: 'pan', pan: digits, brand, last4: digits.slice(-4) };
  }
  throw new Error('--card must be a test PAN, a card token (tok_…) or a PAR (29 upper-case letters and digits)');
}

/** How output names the card: never more than the last four of a PAN. */
export function describeCard(card: SimulatedCard): string {
  switch (card.kind) {
    case 'pan':
      return `${card.brand} •••• ${card.last4}`;
    case 'token':
      return card.token;
    case 'par':
      return `PAR ${card.par.slice(0, 4)}…`;
  }
}

/** A PAN's expiry for the simulated deliveries: December, three years ahead (test cards accept any future date). */
export function testExpiry(now: Date): { readonly expiryMonth: number; readonly expiryYear: number } {
  return { expiryMonth: 12, expiryYear: now.getUTCFullYear() + 3 };
}
