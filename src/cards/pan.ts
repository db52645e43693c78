/**
 * Card number rules. A PAN is accepted with spaces or dashes between digits (as printed and typed),
 * nothing else; it must have 12–19 digits (ISO/IEC 7812) and pass Luhn. Errors never repeat the input.
 */
import { containsCardData } from '../card-data/card-data-guard.js';
import { AppError } from '../errors/app-error.js';
import { luhnValid } from './luhn.js';

export type Brand = 'visa' | 'mastercard' | 'amex' | 'discover' | 'jcb' | 'unknown';

export function normalisePan(input: string): string {
  if (!/^[0-9][0-9 -]*$/.test(input) || /[ -]{2}/.test(input) || /[ -]$/.test(input)) {
    throw new AppError('PAN_INVALID', { detail: 'A card number may contain only digits, single spaces and dashes.' });
  }
  const digits = input.replace(/[ -]/g, '');
  if (digits.length < 12 || digits.length > 19) {
    throw new AppError('PAN_INVALID', { detail: 'A card number has 12 to 19 digits.' });
  }
  if (!luhnValid(digits))
    throw new AppError('PAN_INVALID', { detail: 'The card number fails its check digit (Luhn).' });
  return digits;
}

/** Brand from IIN ranges: Visa 4; Mastercard 51–55, 2221–2720; Amex 34, 37; Discover 6011, 644–649, 65; JCB 3528–3589. */
export function detectBrand(pan: string): Brand {
  const two = Number(pan.slice(0, 2));
  const three = Number(pan.slice(0, 3));
  const four = Number(pan.slice(0, 4));
  if (pan.startsWith('4')) return 'visa';
  if ((two >= 51 && two <= 55) || (four >= 2221 && four <= 2720)) return 'mastercard';
  if (two === 34 || two === 37) return 'amex';
  if (four === 6011 || (three >= 644 && three <= 649) || two === 65) return 'discover';
  if (four >= 3528 && four <= 3589) return 'jcb';
  return 'unknown';
}

export interface Expiry {
  readonly month: number;
  readonly year: number;
}

/**
 * Card lifetime rules: a card is valid to the end of its expiry month. We accept an expiry up to
 * 24 months in the past, because late captures, refunds and card-on-file migrations carry recently
 * expired cards that must still link to their shopper, and up to 20 years ahead (issuers use at most
 * about 10). Month and year come together or not at all.
 */
export function validateExpiry(
  month: number | undefined,
  year: number | undefined,
  now = new Date(),
): Expiry | undefined {
  if (month === undefined && year === undefined) return undefined;
  if (month === undefined || year === undefined) {
    throw new AppError('EXPIRY_INVALID', { detail: 'Give expiryMonth and expiryYear together.' });
  }
  const monthsFromNow = (year - now.getUTCFullYear()) * 12 + (month - (now.getUTCMonth() + 1));
  if (monthsFromNow < -24)
    throw new AppError('EXPIRY_INVALID', { detail: 'The card expired more than 24 months ago.' });
  if (monthsFromNow > 240) throw new AppError('EXPIRY_INVALID', { detail: 'The expiry is more than 20 years ahead.' });
  return { month, year };
}

/** Sensitive authentication data by name and card numbers in free text: the card-data guard's. */
export { findSensitiveAuthenticationData } from '../card-data/card-data-guard.js';

/**
 * The first of these free-text fields that holds card data (a 12–19 digit Luhn-valid run with any
 * separators, a longer run, track data), as a JSON pointer. Such fields are stored and shown back: a
 * PAN typed into the wrong box must be refused, never kept (PCI DSS 3.4).
 */
export function findCardNumberIn(fields: Readonly<Record<string, string | undefined>>): string | undefined {
  for (const [name, value] of Object.entries(fields)) {
    if (value !== undefined && containsCardData(value)) return `/body/${name}`;
  }
  return undefined;
}
