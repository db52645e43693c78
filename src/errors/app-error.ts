/**
 * The one error type of the service. Every failure a client or an operator can see is an `AppError`
 * with a stable `code` from {@link ERROR_CATALOG}: what went wrong, in the domain's words. Which HTTP
 * status a code answers is the HTTP layer's business (`http/problem-statuses.ts`), which renders it as
 * RFC 9457 problem+json; the CLIs print the code and the detail. Messages (`detail`) are written by us
 * and must never contain caller input: input can carry a PAN.
 */

export interface ErrorSpec {
  /** One line for humans, the same for every occurrence of the code (problem+json `title`). */
  readonly title: string;
}

export const ERROR_CATALOG = {
  // the request
  VALIDATION_FAILED: { title: 'The request does not match the API contract' },
  MALFORMED_JSON: { title: 'The request body is not valid JSON' },
  UNSUPPORTED_MEDIA_TYPE: { title: 'The request body has an unsupported content type' },
  PAYLOAD_TOO_LARGE: { title: 'The request body is too large' },
  ROUTE_NOT_FOUND: { title: 'No such resource' },
  METHOD_NOT_ALLOWED: { title: 'Method not allowed on this resource' },
  NOT_FOUND: { title: 'Not found' },
  CONFLICT: { title: 'The request conflicts with the current state' },
  TOO_MANY_REQUESTS: { title: 'Too many requests' },
  FIRST_SIGHTING_RATE_LIMITED: { title: 'Too many new cards from this client' },
  // card vault
  PAN_INVALID: { title: 'The card number is not valid' },
  EXPIRY_INVALID: { title: 'The card expiry is not valid' },
  CARD_NUMBER_NOT_ALLOWED: { title: 'A card number is not accepted in this field' },
  SENSITIVE_AUTHENTICATION_DATA: { title: 'Sensitive authentication data must not be sent (PCI DSS 3.3)' },
  IDENTIFIER_ALREADY_LINKED: { title: 'The identifier already belongs to another card' },
  CARD_HAS_DIFFERENT_PAN: { title: 'The card already has a different card number' },
  CARD_HAS_NO_PAN: { title: 'The card has no card number to reveal' },
  REASON_INVALID: { title: 'The reason is not acceptable' },
  DETOKENISATION_DISABLED: { title: 'Detokenisation is disabled on this service' },
  CARD_PAN_PURGED: { title: "The card's number was purged at the end of its retention period" },
  RETENTION_NOT_CONFIGURED: { title: 'No card-data retention period is configured' },
  // key management (CLI)
  KEY_NOT_FOUND: { title: 'No such key version' },
  KEY_OPERATION_INVALID: { title: 'The key is not in a state that allows this operation' },
  KEY_VERSION_IN_USE: { title: 'Rows are still protected by this key version' },
  KEY_INSTANCES_BEHIND: {
    title: 'Live service instances have not loaded the key-ring generation this operation needs',
  },
  DUAL_CONTROL_REQUIRED: { title: 'Two approvals from distinct key custodians are required' },
  SINGLE_OPERATOR_REFUSED: {
    title: 'Single-operator key management is refused (in production, or once custodians are registered)',
  },
  APPROVAL_INVALID: { title: 'The approval signature does not verify for this request' },
  APPROVAL_DUPLICATE: { title: 'This custodian has already approved this request' },
  KEY_REQUEST_NOT_FOUND: { title: 'No such key-management request' },
  KEY_REQUEST_NOT_PENDING: { title: 'The key-management request is no longer pending' },
  KEY_REQUEST_MISMATCH: { title: 'The command differs from the approved request' },
  CUSTODIAN_INVALID: { title: 'The custodian registration is not acceptable' },
  CUSTODIAN_EXISTS: { title: 'A custodian with this name or key is already registered' },
  CUSTODIANS_TOO_FEW: { title: 'Fewer than two key custodians are registered' },
  KEY_REQUEST_EXPIRED: { title: 'The key-management request has expired' },
  KEY_REQUEST_TAMPERED: { title: 'The stored request differs from what the custodians signed' },
  DUAL_CONTROL_TAMPERED: { title: 'The dual-control records do not verify under the master key' },
  KEY_STATE_TAMPERED: { title: 'The state of a key version is not backed by an authorised, intact audit record' },
  APPROVAL_NOT_CONFIRMED: { title: 'The custodian did not confirm the approval' },
  AUDIT_EXPORT_INVALID: { title: 'The audit export does not verify' },
  AUDIT_CHAIN_KEY_UNAVAILABLE: { title: 'The audit-chain key is not available to this process' },
  AUDIT_CHAIN_BROKEN: { title: 'The audit trail does not verify' },
  AUDIT_REDACTION_INVALID: { title: 'This audit entry cannot be redacted' },
  CLIENT_CERTIFICATE_NOT_FOUND: { title: 'No such client certificate' },
  CLIENT_CERTIFICATE_REQUEST_INVALID: { title: 'The client certificate request is not acceptable' },
  CLIENT_CERTIFICATE_SCOPE_REFUSED: { title: 'This scope is never granted to a client certificate' },
  // payment webhooks
  WEBHOOK_SIGNATURE_MISSING: { title: 'The webhook signature is missing' },
  WEBHOOK_ID_INVALID: { title: 'The webhook-id header is not a valid message id' },
  WEBHOOK_SIGNATURE_INVALID: { title: 'The webhook signature does not verify' },
  WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE: { title: 'The webhook timestamp is outside the tolerance' },
  WEBHOOK_BASIC_AUTH_INVALID: { title: 'The webhook credentials are not accepted' },
  WEBHOOK_PROVIDER_DISABLED: { title: 'No secret is configured for this webhook provider' },
  CARD_TOKEN_UNKNOWN: { title: 'The card token is not known to this vault' },
  PAYMENT_CURRENCY_MISMATCH: { title: 'The event currency differs from the payment currency' },
  // card-data hardening of Adyen notifications (an item's inbox code when rejected; the environment, a refusal)
  ADYEN_REFERENCE_INVALID: { title: 'The Adyen pspReference or originalReference is not 16 alphanumerics' },
  ADYEN_REFERENCE_IS_CARD_NUMBER: {
    title: 'The Adyen pspReference or originalReference is a card number known to this vault',
  },
  ADYEN_SIGNED_FIELD_SEPARATOR: { title: 'A signed Adyen field holds the separator of the signed string' },
  ADYEN_EVENT_CODE_INVALID: { title: 'The Adyen eventCode is not upper-case letters and underscores' },
  WEBHOOK_ENVIRONMENT_MISMATCH: { title: 'The notification is from another gateway environment' },
  INBOX_EVENT_NOT_REPLAYABLE: { title: 'This inbox event has no payment effect to replay' },
  // wallets and card-updater events (issue 22; the last two are inbox codes)
  WALLET_PAYMENT_NEEDS_PAR: { title: 'A wallet payment names its card by PAR or token, never by the device token' },
  CARD_UPDATE_UNKNOWN_CARD: { title: 'The card-updater event names a card this vault does not know' },
  CARD_UPDATE_OTHER_SHOPPER: {
    title: 'The replacement card belongs to another shopper: merge them explicitly',
  },
  // loyalty
  SHOPPER_MERGED: { title: 'This shopper was merged into another' },
  INSUFFICIENT_POINTS: { title: 'Not enough points are available' },
  REDEMPTION_VELOCITY_EXCEEDED: { title: 'Too many redemptions for this shopper in the window' },
  REDEMPTION_ABOVE_LIMIT: { title: 'The redemption is larger than the programme allows in its window' },
  IDEMPOTENCY_KEY_REUSED: { title: 'The Idempotency-Key was used with a different request' },
  MERGE_REQUIRES_ADMIN: { title: 'Merging two enrolled members requires an administrator' },
  MEMBERSHIP_REQUIRED: { title: 'Only an enrolled member can claim another card' },
  EXTERNAL_MEMBER_ID_TAKEN: { title: 'The external member id belongs to another shopper' },
  CAMPAIGN_DEFINITION_INVALID: { title: 'The campaign definition is not acceptable' },
  CAMPAIGN_EFFECTIVE_IN_PAST: { title: 'A campaign version cannot take effect before it is published' },
  ADJUSTMENT_CAP_EXCEEDED: { title: "The operator's daily cap on granted points would be exceeded" },
  ADJUSTMENT_INVALID: { title: 'The points adjustment is not acceptable' },
  CLAIM_PAYMENT_EARNED: { title: 'The claimed payment has earned points already' },
  TIER_POLICY_INVALID: { title: "The programme's tier policy is not acceptable" },
  // returns and store credit
  INSUFFICIENT_STORE_CREDIT: { title: 'Not enough store credit is available in this currency' },
  RETURN_EXCEEDS_REFUNDABLE: { title: 'The return is more than what is left to return of the payment' },
  RETURN_REFUND_MISMATCH: { title: 'The gateway refund id names a refund of another amount or another return' },
  // outbound events
  WEBHOOK_TARGET_REFUSED: { title: 'The webhook target URL is not accepted' },
  SUBSCRIPTION_EXISTS: { title: 'A subscription for this URL already exists' },
  EVENT_NOT_REPLAYABLE: { title: 'This delivery cannot be replayed' },
  SECRET_ROTATION_REPEATED: { title: 'This rotation was already made; its secret was shown once' },
  // who is calling
  TOKEN_MISSING: { title: 'A bearer token is required' },
  TOKEN_MALFORMED: { title: 'The bearer token is malformed' },
  TOKEN_EXPIRED: { title: 'The bearer token has expired' },
  TOKEN_NOT_YET_VALID: { title: 'The bearer token is not yet valid' },
  TOKEN_CLAIM_INVALID: { title: 'A claim of the bearer token is not accepted' },
  TOKEN_LIFETIME_TOO_LONG: { title: 'The bearer token lives longer than this service accepts' },
  TOKEN_ISSUED_AT_MISSING: { title: 'The bearer token has no "iat" claim' },
  TOKEN_ISSUED_IN_FUTURE: { title: 'The bearer token was issued in the future' },
  TOKEN_SUBJECT_INVALID: { title: 'The subject of the bearer token is not acceptable' },
  TOKEN_SUBJECT_RESERVED: { title: 'The subject of the bearer token is reserved for client certificates' },
  TOKEN_ALGORITHM_REJECTED: { title: 'The bearer token uses an algorithm that is not accepted' },
  TOKEN_SIGNATURE_INVALID: { title: 'The bearer token signature does not verify' },
  TOKEN_KEY_UNKNOWN: { title: 'The bearer token was signed by an unknown key' },
  AUTH_KEYS_UNAVAILABLE: { title: 'The signing keys of the identity provider are unavailable' },
  INSUFFICIENT_SCOPE: { title: 'The bearer token lacks a required scope' },
  CLIENT_CERTIFICATE_REQUIRED: { title: 'A client certificate is required on this route' },
  CLIENT_CERTIFICATE_UNTRUSTED: { title: 'The client certificate was not issued by a trusted CA' },
  CLIENT_CERTIFICATE_EXPIRED: { title: 'The client certificate is expired or not yet valid' },
  CLIENT_CERTIFICATE_REVOKED: { title: 'The client certificate has been revoked' },
  // Fail closed: with the sealed revocation list tampered with, no certificate can be shown unrevoked.
  CLIENT_CERTIFICATE_REVOCATIONS_INVALID: {
    title: 'The revocation list failed its integrity check: no client certificate is accepted',
  },
  // master key in custodians' shares (src/keys/master-key-sources/shares.ts)
  MASTER_KEY_SPLIT_INVALID: { title: 'The master-key split is not acceptable' },
  MASTER_KEY_SPLIT_MISSING: { title: 'The master key has not been split into shares' },
  MASTER_KEY_SHARE_INVALID: { title: 'The master-key share file is not acceptable' },
  UNSEAL_SUBMISSION_INVALID: { title: 'The unseal submission is not signed by a share holder' },
  UNSEAL_NONCE_STALE: { title: 'The unseal submission was made for another seal of this instance' },
  UNSEAL_SHARE_REFUSED: { title: 'The share is not the one this custodian holds' },
  UNSEAL_SHARE_DUPLICATE: { title: 'This custodian has submitted a share already' },
  UNSEAL_KEY_MISMATCH: { title: 'The shares did not rebuild the configured master key' },
  VAULT_NOT_SEALED: { title: 'The vault is not sealed' },
  // us: the service, its database and its keys
  // The master key is in custodians' shares and not enough of them have been submitted to this
  // instance since it started or was sealed: card operations wait for `keys unseal`.
  VAULT_SEALED: { title: 'The vault is sealed: the master key has not been rebuilt from its shares' },
  NOT_READY: { title: 'The service is not ready' },
  DATABASE_UNAVAILABLE: { title: 'The database is unavailable' },
  DATABASE_TIMEOUT: { title: 'The database did not answer in time' },
  // The database refused a key version this instance's ring still took for writable, on the retry
  // too (a key-state change raced the reload): nothing was stored, retry shortly.
  KEY_RING_STALE: { title: 'The key ring of this instance is being reloaded' },
  // The master-key source cannot wrap or unwrap now (a PKCS#11 token slow, absent or logged out):
  // nothing was written; the source reconnects on its own, retry after Retry-After.
  MASTER_KEY_UNAVAILABLE: { title: 'The master key is unavailable' },
  // The reference-digest key (keys/reference-digests.ts) is gone or replaced while the audit trail
  // records its creation: a new key would give redeliveries new digests (applied twice), so nothing
  // that needs a digest is done until an operator restores the key (docs/key-management.md).
  REFERENCE_KEY_MISSING: { title: 'The reference-digest key is missing or replaced' },
  // The master key is not loaded: the service started sealed and waits for `keys unseal`.
  DATA_FOLDER_IN_USE: { title: 'The embedded data folder is held by another process' },
  RESPONSE_CONTRACT_VIOLATION: { title: 'The service produced a response outside its contract' },
  INTERNAL: { title: 'Internal error' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CATALOG;

export interface AppErrorOptions {
  /** A sentence for humans. Never include caller input. */
  readonly detail?: string;
  /** Extra RFC 9457 members, e.g. `errors` for validation. Never include caller input values. */
  readonly extensions?: Readonly<Record<string, unknown>>;
  /** Response headers that belong with the error (`Retry-After`, `Allow`, `WWW-Authenticate`). */
  readonly headers?: Readonly<Record<string, string>>;
  readonly cause?: unknown;
}

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly title: string;
  readonly detail: string | undefined;
  readonly extensions: Readonly<Record<string, unknown>>;
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: ErrorCode, options: AppErrorOptions = {}) {
    const spec: ErrorSpec = ERROR_CATALOG[code];
    super(options.detail ?? spec.title, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.title = spec.title;
    this.detail = options.detail;
    this.extensions = options.extensions ?? {};
    this.headers = options.headers ?? {};
  }
}

export function isAppError(value: unknown): value is AppError {
  return value instanceof AppError;
}

/**
 * A master-key source that cannot answer now (a PKCS#11 token away, a sealed vault), as opposed to a
 * wrapped value it does not open. Code that tries the next key or skips a row on an unwrap failure
 * must rethrow this one: skipping would, for instance, commit a rotation with rows left unrewrapped.
 */
export function isMasterKeyUnavailable(error: unknown): boolean {
  return error instanceof AppError && (error.code === 'MASTER_KEY_UNAVAILABLE' || error.code === 'VAULT_SEALED');
}
