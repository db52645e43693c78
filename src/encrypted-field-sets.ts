/**
 * Every field set protected by data keys, in the order a backfill walks them: the registry the
 * composition roots hand to key rotation, inventory and retirement (src/keys/field-sets.ts). Each
 * feature defines its own sets; this list only gathers them.
 */
import { cardPans, identifierFingerprints, identifierValues } from './cards/card-field-sets.js';
import { legacySubscriptionSecrets, subscriptionSecrets } from './events/subscription-secrets.js';
import type { EncryptedFieldSet } from './keys/field-sets.js';
import { memberEmails } from './loyalty/member-field-sets.js';
import { liveClientCertificates } from './mtls/client-certificate-records.js';

export const builtInFieldSets: readonly EncryptedFieldSet[] = [
  cardPans,
  identifierValues,
  identifierFingerprints,
  memberEmails,
  legacySubscriptionSecrets,
  subscriptionSecrets,
];

/** The built-in sets and the live client certificates' (what the key CLI rotates). */
export const encryptedFieldSets: readonly EncryptedFieldSet[] = [...builtInFieldSets, liveClientCertificates];
