import { randomInt } from 'node:crypto';
import { luhnValid } from '../../src/cards/luhn.js';

/** The card schemes' published test numbers (../shared/references.md). */
export const TEST_PANS = {
  visa: ['4111111111111111', '4012888888881881', '4242424242424242', '4000056655665556'],
  mastercard: ['5555555555554444', '5105105105105100', '2223003122003222'],
  amex: ['378282246310005'],
  discover: ['6011111111111117'],
  jcb: ['3530111333300000'],
} as const;

export const ALL_TEST_PANS: readonly string[] = Object.values(TEST_PANS).flat();

/** `n` distinct Luhn-valid 16-digit numbers under a test BIN, made at run time (never written to disk). */
export function generatePans(n: number, bin = '411111'): string[] {
  const out = new Set<string>();
  while (out.size < n) {
    let body = bin;
    while (body.length < 15) body += String(randomInt(10));
    for (let d = 0; d <= 9; d++) {
      if (luhnValid(body + d)) {
        out.add(body + d);
        break;
      }
    }
  }
  return [...out];
}

/** A test PAN written the way people and terminals write it. */
export function spaced(pan: string): string {
  return pan.replace(/(\d{4})(?=\d)/g, '$1 ');
}

/** `4111111111111111` → `4111 1111 1111 1111` (Amex: `3782 822463 10005`), as people write them. */
export function groupPan(pan: string, separator: string): string {
  const groups = pan.length === 15 ? [4, 6, 5] : [4, 4, 4, 4, 4].slice(0, Math.ceil(pan.length / 4));
  const out: string[] = [];
  let at = 0;
  for (const size of groups) {
    out.push(pan.slice(at, at + size));
    at += size;
  }
  return out.filter((g) => g.length > 0).join(separator);
}

/**
 * Matches the PAN however it is written: digits separated by nothing, a space, a dash, or their
 * URL-encoded forms. A log that holds any of these leaks the PAN.
 */
export function panPattern(pan: string): RegExp {
  return new RegExp(pan.split('').join('(?:[ -]|%20|\\+)?'));
}
