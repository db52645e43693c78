/** The card schemes' test numbers (shared/references.md): every one is Luhn-valid. */
export const TEST_PANS = [
  '4111111111111111',
  '4012888888881881',
  '4242424242424242',
  '5555555555554444',
  '5105105105105100',
  '2223003122003222',
  '378282246310005',
  '6011111111111117',
  '3530111333300000',
  '4000056655665556',
] as const;

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
