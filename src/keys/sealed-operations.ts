/**
 * Which operations a sealed vault still serves (MASTER_KEY_SOURCE=shares, before `keys unseal`).
 *
 * An allow-list, so that an operation added later is refused while sealed until someone decides
 * otherwise (fail closed). On it: what needs no key at all — health, the contract, the caller's
 * identity, metrics, the unseal endpoints themselves, and loyalty reads (balance, ledger, purchases,
 * programme) and admin listings, which read rows by shopper reference or id and neither unwrap a data
 * key nor append to the audit trail (which is MAC'd under a key the master key unwraps).
 *
 * Refused with 503 `VAULT_SEALED` (and `Retry-After`), decided per route:
 * - tokenise, look up, attach, detokenise: they MAC and encrypt card data;
 * - the three payment webhooks: a PAN or alias must be fingerprinted to find its card; gateways
 *   redeliver on a 5xx, so nothing is lost while the vault is sealed; the inbox replay likewise;
 * - enrolment and card links: they fingerprint a card and write audit entries;
 * - redemptions, their reversal and programme changes: they append to the audit trail;
 * - subscription writes and secret rotation: the signing secrets are sealed under a data key.
 */
import { AppError } from '../errors/app-error.js';
import type { MasterKeySource } from './master-key-types.js';

export const OPERATIONS_SERVED_SEALED: ReadonlySet<string> = new Set([
  'getLiveness',
  'getReadiness',
  'getOpenApiDocument',
  'getCurrentPrincipal',
  'getMetrics',
  'getUnsealStatus',
  'submitUnsealShare',
  'sealVault',
  'getShopperBalance',
  'getShopperTier',
  'listShopperLedger',
  'listShopperPurchases',
  'getProgramme',
  'listWebhookInbox',
  'listSubscriptions',
  'getSubscription',
  'listSubscriptionDeliveries',
  'listSubscriptionAttempts',
]);

/** Throws VAULT_SEALED for an operation that needs the master key while the source is sealed. */
export function refuseWhileSealed(operationId: string, source: MasterKeySource): void {
  if (OPERATIONS_SERVED_SEALED.has(operationId)) return;
  const readiness = source.readiness();
  if (!readiness.ready && readiness.code === 'VAULT_SEALED') {
    throw new AppError('VAULT_SEALED', { detail: readiness.detail, headers: { 'Retry-After': '5' } });
  }
}
