/**
 * Card number rules. A PAN is accepted with spaces or dashes between digits (as printed and typed),
 * nothing else; it must have 12–19 digits (ISO/IEC 7812) and pass Luhn. Errors never repeat the input.
 */
import { maskPans } from '../logging/pan-redactor.js';
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

const SAD_FIELDS = new Set([
  'cvv',
  'cvv2',
  'cvc',
  'cvc2',
  'cid',
  'csc',
  'cav2',
  'securitycode',
  'cardsecuritycode',
  'cardverificationvalue',
  'track',
  'track1',
  'track2',
  'trackdata',
  'magstripe',
  'magneticstripe',
  'pin',
  'pinblock',
]);

/**
 * PCI DSS 3.3: sensitive authentication data must never be stored after authorisation, so it is
 * refused on input wherever it appears in a body. Returns the JSON pointer of the first offender.
 */
export function findSensitiveAuthenticationData(value: unknown, pointer = '', depth = 0): string | undefined {
  if (depth > 32 || value === null || typeof value !== 'object') return undefined;
  for (const [key, child] of Object.entries(value as Record<string, unknown>)) {
    const here = `${pointer}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`;
    if (SAD_FIELDS.has(key.toLowerCase().replace(/[^a-z0-9]/g, ''))) return here;
    const nested = findSensitiveAuthenticationData(child, here, depth + 1);
    if (nested !== undefined) return nested;
  }
  return undefined;
}

/**
 * The first of these free-text fields that holds something shaped like a card number (a 13–19 digit
 * Luhn-valid run, spaces and dashes allowed), as a JSON pointer. Such fields are stored and shown
 * back: a PAN typed into the wrong box must be refused, never kept (PCI DSS 3.4).
 */
export function findCardNumberIn(fields: Readonly<Record<string, string | undefined>>): string | undefined {
  for (const [name, value] of Object.entries(fields)) {
    if (value !== undefined && maskPans(value) !== value) return `/body/${name}`;
  }
  return undefined;
}
