/**
 * The `sub` of a bearer token, made safe to use as an audit actor and a rate-limit bucket.
 *
 * Security decisions:
 * - The subject is normalised to NFKC first, and every later decision is taken on the normalised
 *   form: full-width and compatibility look-alikes (`ｍｔｌｓ：till-1`) become the characters they
 *   imitate, so they cannot pass a prefix check that the imitated text would fail, and two spellings
 *   of one client share one bucket and one actor.
 * - A subject holding whitespace, a control, a format character (zero-width, bidi overrides, the BOM),
 *   a separator, a default-ignorable, a private-use, unassigned or surrogate code point is refused
 *   outright: such a subject reads as another one in a log or an audit export (`mtls\u200b:till-1`
 *   prints as `mtls:till-1`). No identity provider issues one.
 * - `mtls:` (in any case) names client-certificate principals (src/mtls); a token may never claim it.
 * - Not covered: cross-script confusables (a Cyrillic `т` in `mтls:`). NFKC keeps them distinct, so
 *   they name a different bucket and actor (never the certificate's), but a human may misread them.
 */
import { AppError } from '../errors/app-error.js';

/** Subjects of client-certificate principals (src/mtls); never accepted from a bearer token. */
export const CERTIFICATE_SUBJECT_PREFIX = 'mtls:';
export const MAX_SUBJECT_LENGTH = 256;

/** Whitespace, separators, other (Cc, Cf, Cs, Co, Cn) and default-ignorable code points. */
const INVISIBLE_OR_CONTROL = /[\p{White_Space}\p{Z}\p{C}\p{Default_Ignorable_Code_Point}]/u;

/**
 * The subject as this service uses it, or `TOKEN_CLAIM_INVALID` (missing, not a string, too long),
 * `TOKEN_SUBJECT_INVALID` (invisible or control characters) or `TOKEN_SUBJECT_RESERVED` (`mtls:`).
 */
export function normaliseSubject(sub: unknown): string {
  if (typeof sub !== 'string' || sub.length === 0 || sub.length > MAX_SUBJECT_LENGTH) {
    throw new AppError('TOKEN_CLAIM_INVALID', {
      detail: `The "sub" claim must be a non-empty string of at most ${MAX_SUBJECT_LENGTH} characters.`,
    });
  }
  const normalised = sub.normalize('NFKC');
  // Checked on both forms: NFKC maps some spaces to plain spaces, and keeps every format character.
  if (
    INVISIBLE_OR_CONTROL.test(sub) ||
    INVISIBLE_OR_CONTROL.test(normalised) ||
    normalised.length > MAX_SUBJECT_LENGTH
  ) {
    throw new AppError('TOKEN_SUBJECT_INVALID', {
      detail: 'The "sub" claim must not hold whitespace, control, format or invisible characters.',
    });
  }
  // `mtls:<client>` is the subject of a client-certificate principal: a token claiming it would share
  // that client's audit attribution and rate-limit bucket.
  if (normalised.toLowerCase().startsWith(CERTIFICATE_SUBJECT_PREFIX)) {
    throw new AppError('TOKEN_SUBJECT_RESERVED', {
      detail: `The "sub" claim must not start with "${CERTIFICATE_SUBJECT_PREFIX}" (reserved for client certificates).`,
    });
  }
  return normalised;
}
