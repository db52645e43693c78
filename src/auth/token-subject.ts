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
 * - `mtls:` names client-certificate principals (src/mtls); a token may never claim it, nor anything
 *   that reads like it: the subject's look-alike skeleton (lower case, `rn` read as `m`, `1 i | !` as
 *   `l`, `5 $` as `s`, `0` as `o`) must not start with `mtls` followed by anything but a letter or
 *   digit (`mtIs:`, `rntls:`, `mtls∶` with a ratio sign, `mtls.`).
 * - After NFKC the subject must be printable ASCII from a conservative set: letters, digits and
 *   `- _ . @ : | / + = ~`, at most MAX_SUBJECT_LENGTH. That is what identity providers issue (Auth0
 *   `auth0|64f1…` and `…@clients`, Okta `00u1…`, Entra ID base64url ids, Keycloak and Cognito UUIDs,
 *   Google numeric ids, e-mail addresses, SPIFFE `spiffe://…` URIs) and it leaves no room for
 *   cross-script confusables (a Cyrillic `т`), a Braille blank or an exotic colon.
 * - Independently of all this, rate-limit buckets are keyed by the kind of principal (`jwt:<sub>` vs
 *   the certificate's `mtls:<client>`, src/http/callers.ts) and audit entries of card
 *   operations record it, so even a subject that slipped through could not share a certificate's.
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
  // `mtls:<client>` is the subject of a client-certificate principal: a token claiming it, or a look-alike
  // of it, would share (or seem to share) that client's audit attribution and rate-limit bucket.
  if (RESERVED_SKELETON.test(skeleton(normalised))) {
    throw new AppError('TOKEN_SUBJECT_RESERVED', {
      detail: `The "sub" claim must not start with "${CERTIFICATE_SUBJECT_PREFIX}" or a look-alike (reserved for client certificates).`,
    });
  }
  if (!SUBJECT_CHARACTERS.test(normalised)) {
    throw new AppError('TOKEN_SUBJECT_INVALID', {
      detail: 'The "sub" claim must consist of ASCII letters, digits and - _ . @ : | / + = ~ only.',
    });
  }
  return normalised;
}

/** What a subject may hold after NFKC (see the header). */
const SUBJECT_CHARACTERS = /^[A-Za-z0-9\-_.@:|/+=~]+$/;

/** `mtls` then anything but an ASCII letter or digit (a colon, or any look-alike of one). */
const RESERVED_SKELETON = /^mtls[^a-z0-9]/;

/** The subject as a reader might misread it: ASCII look-alikes of `m`, `l`, `s` and `o` folded. */
function skeleton(subject: string): string {
  return subject
    .toLowerCase()
    .replace(/rn/g, 'm')
    .replace(/[1i|!]/g, 'l')
    .replace(/[5$]/g, 's')
    .replace(/0/g, 'o');
}
