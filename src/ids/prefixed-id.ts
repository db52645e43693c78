/**
 * Application-generated identifiers: a type prefix and 130 random bits in lower-case RFC 4648 base32
 * (`tok_…`, `shp_…`). Never derived from card data, so key rotation never changes them.
 *
 * An id can never be mistaken for a PAN: the prefix and the letters break any digit run, and a
 * candidate whose random part holds 12 or more consecutive digits is drawn again, so no 13–19 digit
 * Luhn-valid run (what the log redactor and PAN scanners look for) can ever appear in one.
 */
import { randomBytes } from 'node:crypto';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
const RANDOM_CHARS = 26; // 26 × 5 = 130 bits
const DIGIT_RUN = /\d{12,}/;

export type IdPrefix =
  | 'tok'
  | 'shp'
  | 'cid'
  | 'pay'
  | 'evt'
  | 'red'
  | 'adj'
  | 'aud'
  | 'req'
  | 'lot'
  | 'led'
  | 'cus'
  | 'krq'
  | 'sub'
  | 'whs'
  | 'att'
  | 'ins'
  | 'msp'
  | 'cmp'
  | 'rtn'
  | 'scs'
  | 'sce';

export function newId(prefix: IdPrefix): string {
  for (;;) {
    const bytes = randomBytes(RANDOM_CHARS);
    let out = '';
    // 32 divides 256, so `byte & 31` is uniform.
    for (const byte of bytes) out += ALPHABET.charAt(byte & 31);
    if (!DIGIT_RUN.test(out)) return `${prefix}_${out}`;
  }
}

const patterns = new Map<IdPrefix, RegExp>();

export function isId(prefix: IdPrefix, value: string): boolean {
  let pattern = patterns.get(prefix);
  if (pattern === undefined) {
    pattern = new RegExp(`^${prefix}_[a-z2-7]{${RANDOM_CHARS}}$`);
    patterns.set(prefix, pattern);
  }
  return pattern.test(value);
}

export const isShopperRef = (value: string): boolean => isId('shp', value);
export const isCardToken = (value: string): boolean => isId('tok', value);
