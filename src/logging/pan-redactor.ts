/**
 * Masks anything that could be a card number in free text, before it leaves the process.
 *
 * A candidate is a run of digits, optionally separated by single spaces or dashes (how people and
 * terminals write PANs). A run of 13–19 digits that passes Luhn is masked to its last four digits;
 * a run longer than 19 digits is masked whole, because a PAN can hide inside it. Shorter runs and
 * Luhn-invalid runs are kept so that amounts, ports and most ids stay readable.
 */
import { luhnValid } from '../cards/luhn.js';

const DIGIT_RUN = /\d(?:[ -]?\d){12,}/g;

export function maskPans(text: string): string {
  if (!hasLongDigitRun(text)) return text;
  return text.replace(DIGIT_RUN, (run) => {
    const digits = run.replace(/[ -]/g, '');
    if (digits.length > 19) return '[REDACTED]';
    if (!luhnValid(digits)) return run;
    return `[PAN …${digits.slice(-4)}]`;
  });
}

/** Fast pre-check: most log lines have no 13-digit run, so skip the regex replace entirely. */
function hasLongDigitRun(text: string): boolean {
  let count = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (++count >= 13) return true;
    } else if (!((c === 32 || c === 45) && count > 0)) {
      count = 0;
    }
  }
  return false;
}
