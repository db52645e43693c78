/* eslint max-lines: ["error", 440] -- issue 16 asks for one card-data guard, a single leaf module: detector, masking and the JSON walkers stay together */
/**
 * The card-data guard: the one place that decides what counts as card data in text and in parsed
 * JSON. Everything that writes, logs or answers with text uses it (the logger, problem bodies, the
 * webhook projections, the client-input refusals); the database applies the same rules at its own
 * choke point (`card_data_guard()` in migrations/20261206000100_card_data_guard.ts).
 *
 * What it recognises:
 * - **Card numbers**: a run of digits separated by any characters that are not ASCII letters or
 *   digits (`4111 1111…`, `5105.1051.…`, `6011/0009/…`, `4111_1111_…`, mixed, one digit per group)
 *   holding 12–19 digits (ISO/IEC 7812: the vault accepts 12-digit PANs) that pass Luhn, either as a
 *   whole or as any run of consecutive groups (so `12 4111 1111 1111 1111` does not hide its PAN
 *   behind a prefix). A run of more than 19 digits is treated as card data whole: a PAN can hide in it.
 *   In a run of 17–19 digits, a PAN with up to three digits glued to it (PAN then CVC) is found by
 *   the 15- and 16-digit windows anchored at either end; in a run of 15 or 16 digits, an Amex or
 *   Diners number with one or two digits glued to it, by windows that start with its scheme's IIN. JSON escapes (`\n`, `\t`, `\uXXXX`…) are
 *   separators, so serialised JSON (log lines, problem bodies) is read like the text it encodes.
 * - **Track data**: track 1 (`%B<PAN>^NAME^YYMM…?`) and track 2 (`;<PAN>=YYMM…?`, `<PAN>DYYMM…`),
 *   masked whole because discretionary data and the service code are sensitive authentication data.
 * - **Sensitive authentication data by name** (PCI DSS 3.3): `cvc`, `CVV2`, `Card-Security-Code`,
 *   `TRACK_2`, `pinBlock`…: the whole key compared with case and separators removed, at any depth.
 *
 * Full-width and mathematical digits are read as the ASCII digits NFKC makes of them.
 * What it does not recognise (other non-ASCII digits, letter-bearing encodings, base64…): docs/card-data.md.
 *
 * What it does not do: decide that a Luhn-valid run is harmless because of where it appears. A
 * migration name (`20261130000700_…`) or a 16-digit gateway reference is exactly as PAN-shaped as a
 * PAN; such values are kept readable by not applying the guard to the fields that hold them (the
 * logger's migration field, the database guard's exempt columns), never by weakening the detector.
 *
 * Cost: a single pass over the text that counts digits between letters (no regex, no allocation)
 * answers "no card data" for almost every input; only a text holding at least 12 digits not broken by
 * a letter is looked at further.
 */
import { AppError } from '../errors/app-error.js';

const MIN_PAN_DIGITS = 12;
const MAX_PAN_DIGITS = 19;

/** Luhn (mod 10) check over a string of ASCII digits. Returns false for anything else. */
export function luhnValid(digits: string): boolean {
  if (digits.length === 0) return false;
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (d < 0 || d > 9) return false;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

const isDigit = (c: number): boolean => c >= 48 && c <= 57;
const isLetter = (c: number): boolean => (c >= 65 && c <= 90) || (c >= 97 && c <= 122);

const BACKSLASH = 92;
const isHex = (c: number): boolean => isDigit(c) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);

/**
 * The length of the JSON string escape at `i` (`\n`, `\t`, `\r`, `\b`, `\f`, `\"`, `\\`, `\/`,
 * `\uXXXX`), or 0. Text that is serialised JSON (a log line, a problem body) writes a newline or a tab
 * between digits as a backslash and a letter; the escape is a separator like the character it stands
 * for, never a letter that ends a run, and the hex digits of `\uXXXX` are never digits of the run.
 */
function escapeLength(text: string, i: number): number {
  if (text.charCodeAt(i) !== BACKSLASH || i + 1 >= text.length) return 0;
  const next = text[i + 1];
  if (next === 'u') {
    for (let k = i + 2; k < i + 6; k++) if (k >= text.length || !isHex(text.charCodeAt(k))) return 0;
    return 6;
  }
  return next !== undefined && 'ntrbf"\\/'.includes(next) ? 2 : 0;
}

/**
 * The length (1 or 2 code units) of a digit at `i` that NFKC maps to an ASCII digit: full-width
 * `０-９` (U+FF10–FF19) and the mathematical digits (U+1D7CE–1D7FF); 0 for anything else.
 */
function wideDigitLength(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c >= 0xff10 && c <= 0xff19) return 1;
  if (c !== 0xd835) return 0;
  const low = text.charCodeAt(i + 1);
  return low >= 0xdfce && low <= 0xdfff ? 2 : 0;
}

/** The text with every full-width or mathematical digit written as its ASCII digit (NFKC), or the text itself. */
function withAsciiDigits(text: string): string {
  let wide = false;
  for (let i = 0; i < text.length && !wide; i++) wide = wideDigitLength(text, i) > 0;
  return wide ? text.replace(/[\uff10-\uff19]|\ud835[\udfce-\udfff]/g, (digit) => digit.normalize('NFKC')) : text;
}

/** From a non-digit at `i`: the index after the separators there (0 characters when a letter is at `i`). */
function skipSeparators(text: string, i: number): number {
  let j = i;
  while (j < text.length) {
    const escape = escapeLength(text, j);
    if (escape > 0) {
      j += escape;
      continue;
    }
    const c = text.charCodeAt(j);
    if (isDigit(c) || isLetter(c)) break;
    j++;
  }
  return j;
}

/**
 * The cheap pre-scan: true when the text holds at least 12 digits with no ASCII letter between them
 * (a JSON escape such as `\n` is a separator, not a letter). Anything the guard masks passes this
 * test, so a false answer is final.
 */
export function mayHoldCardData(text: string): boolean {
  let digits = 0;
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    const wide = wideDigitLength(text, i);
    if (isDigit(c) || wide > 0) {
      if (++digits >= MIN_PAN_DIGITS) return true;
      i += Math.max(1, wide);
    } else if (isLetter(c)) {
      digits = 0;
      i++;
    } else {
      i += Math.max(1, escapeLength(text, i));
    }
  }
  return false;
}

// Track 1: format code B, PAN, ^, name, ^, expiry, service code, discretionary data, end sentinel.
const TRACK_1 = /%?B(\d{12,19})\^[^^\n]{0,26}\^[^?\n]*\??/g;
// Track 2: optional start sentinel, PAN, separator (= or D), YYMM, service code and discretionary data.
const TRACK_2 = /;?(\d{12,19})[=D]\d{4}[0-9A-Za-z]*\??/g;

/** The first 12–19 digit Luhn-valid run of consecutive groups: [first group, last group, digits]. */
function cardNumberIn(groups: readonly Group[]): [number, number, string] | undefined {
  for (let from = 0; from < groups.length; from++) {
    let digits = '';
    for (let to = from; to < groups.length; to++) {
      digits += (groups[to] as Group).digits;
      if (digits.length > MAX_PAN_DIGITS) break;
      if (digits.length >= MIN_PAN_DIGITS && luhnValid(digits)) return [from, to, digits];
    }
  }
  return undefined;
}

/**
 * A PAN with up to three digits glued to it (`4111111111111111123`, PAN then CVC; `14111111111111111`):
 * in a run of 17–19 digits that no run of its groups makes Luhn-valid, the 15- and 16-digit windows
 * (Amex; Visa, Mastercard, Discover…) anchored at the start and at the end of the run. A 15- or
 * 16-digit run is searched for a shorter scheme number glued to one or two digits (`1378282246310005`,
 * a junk digit and the Amex test number; `305693090259041`, Diners then a digit) only through windows
 * that start with that scheme's IIN and pass Luhn: 15 digits starting 34/37 (Amex), 14 digits starting
 * 30/36/38/39 (Diners) (issue 16, third review). The IIN condition keeps the cost low: a random
 * 16-digit run that is not Luhn-valid as a whole is flagged by these windows 1.29% of the time, a
 * 15-digit one 0.92% (measured; without the IIN condition 35% and 20%: docs/card-data.md). Shorter runs are not searched
 * this way: a 13-digit unix-ms timestamp or a 14-digit migration timestamp would be flagged about one
 * time in three; a 17–19-digit numeric id is (four windows, each Luhn-valid one time in ten), which is
 * why gateway references live in exempt columns and exempt JSON paths.
 */
function gluedCardNumberIn(run: DigitRun): boolean {
  if (run.digitCount < 15 || run.digitCount > MAX_PAN_DIGITS) return false;
  const digits = run.groups.map((group) => group.digits).join('');
  if (run.digitCount >= 17) {
    return [15, 16].some((n) => luhnValid(digits.slice(0, n)) || luhnValid(digits.slice(-n)));
  }
  const windows = run.digitCount === 16 ? [15, 14] : [14];
  return windows.some((n) => schemeWindow(digits.slice(0, n)) || schemeWindow(digits.slice(-n)));
}

/** IINs of the schemes whose numbers are shorter than 16 digits: Amex (15), Diners Club (14). */
const SHORT_SCHEME_IINS: Readonly<Record<number, readonly string[]>> = {
  15: ['34', '37'],
  14: ['30', '36', '38', '39'],
};

/** True when `window` starts with the IIN of a scheme of its length and passes Luhn. */
function schemeWindow(window: string): boolean {
  const iins = SHORT_SCHEME_IINS[window.length] ?? [];
  return iins.includes(window.slice(0, 2)) && luhnValid(window);
}

interface Group {
  readonly start: number;
  readonly end: number;
  readonly digits: string;
}

interface DigitRun {
  readonly start: number;
  readonly end: number;
  readonly groups: readonly Group[];
  readonly digitCount: number;
}

/** Maximal runs of digits separated by non-alphanumerics, each with its digit groups. */
function digitRuns(text: string): DigitRun[] {
  const runs: DigitRun[] = [];
  let i = 0;
  while (i < text.length) {
    if (!isDigit(text.charCodeAt(i))) {
      i += Math.max(1, escapeLength(text, i));
      continue;
    }
    const start = i;
    const groups: Group[] = [];
    let count = 0;
    let end: number;
    for (;;) {
      const groupStart = i;
      while (i < text.length && isDigit(text.charCodeAt(i))) i++;
      groups.push({ start: groupStart, end: i, digits: text.slice(groupStart, i) });
      count += i - groupStart;
      end = i;
      const j = skipSeparators(text, i);
      if (j < text.length && isDigit(text.charCodeAt(j)) && j > i) {
        i = j;
        continue;
      }
      break;
    }
    if (count >= MIN_PAN_DIGITS) runs.push({ start, end, groups, digitCount: count });
    i = end;
  }
  return runs;
}

/** The replacements of one run: the whole run when it is too long, else the PAN's groups only. */
function maskRun(run: DigitRun): { start: number; end: number; text: string }[] {
  if (run.digitCount > MAX_PAN_DIGITS) return [{ start: run.start, end: run.end, text: '[REDACTED]' }];
  const found = cardNumberIn(run.groups);
  if (found === undefined) {
    return gluedCardNumberIn(run) ? [{ start: run.start, end: run.end, text: '[REDACTED]' }] : [];
  }
  const [from, to, pan] = found;
  const rest = maskRun({ ...run, groups: run.groups.slice(to + 1), digitCount: 0 });
  return [
    { start: (run.groups[from] as Group).start, end: (run.groups[to] as Group).end, text: `[PAN …${pan.slice(-4)}]` },
    ...rest,
  ];
}

/**
 * The text with every card number masked to its last four, track data masked whole. Full-width and
 * mathematical digits are read as the ASCII digits NFKC makes of them; a text holding them and card
 * data comes back with ASCII digits.
 */
export function maskCardData(text: string): string {
  if (!mayHoldCardData(text)) return text;
  const ascii = withAsciiDigits(text);
  if (ascii === text) return maskAsciiCardData(text);
  const masked = maskAsciiCardData(ascii);
  return masked === ascii ? text : masked;
}

function maskAsciiCardData(text: string): string {
  const tracked = text
    .replace(TRACK_1, (_m, pan: string) => (luhnValid(pan) ? `[TRACK …${pan.slice(-4)}]` : _m))
    .replace(TRACK_2, (_m, pan: string) => (luhnValid(pan) ? `[TRACK …${pan.slice(-4)}]` : _m));
  if (!mayHoldCardData(tracked)) return tracked;
  let out = '';
  let at = 0;
  for (const run of digitRuns(tracked)) {
    for (const cut of maskRun(run)) {
      out += tracked.slice(at, cut.start) + cut.text;
      at = cut.end;
    }
  }
  return at === 0 ? tracked : out + tracked.slice(at);
}

/** True when the text holds a card number, a digit run a PAN can hide in, or track data. */
export function containsCardData(text: string): boolean {
  return maskCardData(text) !== text;
}

const SAD_NAMES = new Set([
  'cvv',
  'cvv2',
  'cvc',
  'cvc2',
  'cvn',
  'cvn2',
  'cid',
  'csc',
  'cav2',
  'securitycode',
  'cardsecuritycode',
  'cardverificationvalue',
  'cardverificationcode',
  'track',
  'track1',
  'track2',
  'track3',
  'trackdata',
  'magstripe',
  'magneticstripe',
  'pin',
  'pinblock',
  'pindata',
  'cardcvc',
  'cardcvc2',
  'cardcvv',
  'cardcvv2',
  'cardcid',
  'cardpin',
]);

/** True when a field name means sensitive authentication data, whatever its case and separators. */
export function isSensitiveAuthenticationDataName(name: string): boolean {
  return SAD_NAMES.has(name.toLowerCase().replace(/[^a-z0-9]/g, ''));
}

const MAX_DEPTH = 32;

function pointerStep(pointer: string, key: string): string {
  return `${pointer}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`;
}

/**
 * PCI DSS 3.3: the JSON pointer of the first field whose name means sensitive authentication data,
 * at any depth (arrays included).
 */
export function findSensitiveAuthenticationData(value: unknown, pointer = '', depth = 0): string | undefined {
  if (depth > MAX_DEPTH || value === null || typeof value !== 'object') return undefined;
  for (const [key, child] of Object.entries(value as Record<string, unknown>)) {
    const here = pointerStep(pointer, key);
    if (isSensitiveAuthenticationDataName(key)) return here;
    const nested = findSensitiveAuthenticationData(child, here, depth + 1);
    if (nested !== undefined) return nested;
  }
  return undefined;
}

/**
 * The JSON pointer of the first place in a parsed value that holds card data: a string or number
 * leaf, a property name, or a field named as sensitive authentication data.
 */
export function findCardDataIn(value: unknown, pointer = '', depth = 0): string | undefined {
  if (typeof value === 'string') return containsCardData(value) ? pointer : undefined;
  if (typeof value === 'bigint' || (typeof value === 'number' && Number.isInteger(value))) {
    // Only integers: a fraction (8/9 = 0.888…) is a number, never a card number.
    return containsCardData(String(value)) ? pointer : undefined;
  }
  if (depth > MAX_DEPTH || value === null || typeof value !== 'object') return undefined;
  for (const [key, child] of Object.entries(value as Record<string, unknown>)) {
    const here = pointerStep(pointer, key);
    if (isSensitiveAuthenticationDataName(key) || containsCardData(key)) return here;
    const nested = findCardDataIn(child, here, depth + 1);
    if (nested !== undefined) return nested;
  }
  return undefined;
}

export interface MaskedValue<T> {
  readonly value: T;
  /** JSON pointers of what was masked (card data in text) or dropped (sensitive authentication data). */
  readonly masked: readonly string[];
}

/**
 * A copy of a parsed value with every string masked and every sensitive-authentication-data field
 * (and any property whose name holds card data) dropped; numbers holding card data become masked
 * strings. Used on projections that are about to be stored.
 */
export function maskCardDataDeep<T>(value: T): MaskedValue<T> {
  const masked: string[] = [];
  const walk = (node: unknown, pointer: string, depth: number): unknown => {
    if (typeof node === 'string') {
      const out = maskCardData(node);
      if (out !== node) masked.push(pointer);
      return out;
    }
    if (typeof node === 'number') {
      if (!Number.isInteger(node)) return node;
      const text = String(node);
      if (!containsCardData(text)) return node;
      masked.push(pointer);
      return maskCardData(text);
    }
    if (node === null || typeof node !== 'object') return node;
    if (depth > MAX_DEPTH) {
      masked.push(pointer);
      return null;
    }
    if (Array.isArray(node)) return node.map((child, index) => walk(child, `${pointer}/${index}`, depth + 1));
    const out: Record<string, unknown> = {};
    for (const [key, child] of Object.entries(node as Record<string, unknown>)) {
      const here = pointerStep(pointer, key);
      if (isSensitiveAuthenticationDataName(key) || containsCardData(key)) {
        masked.push(here);
        continue;
      }
      out[key] = walk(child, here, depth + 1);
    }
    return out;
  };
  return { value: walk(value, '', 0) as T, masked };
}

/**
 * Client input that is stored and shown back must not hold card data: refused (422
 * `CARD_NUMBER_NOT_ALLOWED`) with the pointer of the first offending field, never masked and kept.
 * `prefix` is where the fields live (`/body`, `/headers`).
 */
export function refuseCardData(fields: Readonly<Record<string, string | undefined>>, prefix = '/body'): void {
  for (const [name, value] of Object.entries(fields)) {
    if (value !== undefined && containsCardData(value)) {
      throw new AppError('CARD_NUMBER_NOT_ALLOWED', {
        detail: 'Card numbers are accepted only by the card vault.',
        extensions: { errors: [{ pointer: pointerStep(prefix, name), message: 'must not hold a card number' }] },
      });
    }
  }
}
