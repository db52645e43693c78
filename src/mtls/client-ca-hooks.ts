import type { ClientCaHooks } from '../keys/client-ca.js';
import { generateCa } from './certificate-authority.js';
import { rewrapSeals, sealCa } from './seals.js';

/** The client CA as key custody creates, seals and re-seals it (src/keys/client-ca.ts). */
export const clientCaHooks: ClientCaHooks = {
  generate: (version, validityDays) => generateCa(version, validityDays),
  seal: sealCa,
  rewrapSeals,
};
