import { emailAad } from '../crypto/field-crypto.js';
import { aesColumnFieldSet } from '../keys/field-sets.js';

/** Loyalty members' e-mail addresses, AAD bound to the shopper and key version. */
export const memberEmails = aesColumnFieldSet({
  name: 'loyalty_accounts.email',
  description: 'member e-mail addresses (loyalty_accounts.email_ciphertext)',
  table: 'loyalty_accounts',
  idColumn: 'shopper_ref',
  ciphertextColumn: 'email_ciphertext',
  versionColumn: 'email_key_version',
  aad: emailAad,
});
