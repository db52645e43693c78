/**
 * Who is acting, as the services and the audit trail see it: derived from the authenticated principal
 * by the HTTP layer (src/http/callers.ts) or set by a CLI. Types only: every layer may use them.
 */

/** Who is asking: used for shopper scoping and for the audit trail. */
export interface Caller {
  readonly subject: string;
  /** Set for shopper tokens: such a caller reaches only this shopper's cards. */
  readonly shopperRef: string | undefined;
  readonly origin: string;
  /**
   * The client's rate-limit key, naming the kind of principal (`jwt:<sub>`, or the certificate
   * principal's `mtls:<client>`), so a token subject can never share a certificate's bucket.
   * Defaults to `subject` (internal callers).
   */
  readonly clientKey?: string;
  /** How the caller authenticated; recorded in audit details. */
  readonly principalKind?: 'token' | 'certificate';
}

/** Who acts on the loyalty ledger or a subscription: the audit trail's subject and origin. */
export interface Actor {
  readonly subject: string;
  readonly origin: string;
}

/** Who acts on keys, certificates or the audit trail itself, as recorded in audit entries. */
export interface KeyActor {
  readonly actor: string;
  readonly actorType: 'system' | 'custodian' | 'operator' | 'service';
  readonly origin: string;
}
