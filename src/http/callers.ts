/**
 * Who is calling, read from the principal the authentication middleware attached: the caller the card
 * vault scopes and audits by, and the actor the loyalty ledger and subscriptions audit by. Handlers of
 * every feature use these; they live here, with the request, not in one feature.
 */
import type { Request } from 'express';
import type { Actor, Caller } from '../auth/actors.js';
import type { Principal } from '../auth/authenticator.js';
import { isCertificatePrincipal } from './operation-middleware.js';
import { principalOf } from './types.js';

/**
 * The client's key in rate-limit buckets, naming the kind of principal: `mtls:<client>` for a client
 * certificate, `jwt:<sub>` for a bearer token. A token subject can never share a certificate's bucket,
 * whatever it looks like.
 */
export function clientKeyOf(principal: Principal): string {
  return isCertificatePrincipal(principal) ? principal.subject : `jwt:${principal.subject}`;
}

export function callerOf(req: Request): Caller {
  const principal = principalOf(req);
  return {
    subject: principal.subject,
    shopperRef: principal.shopperRef,
    clientKey: clientKeyOf(principal),
    principalKind: isCertificatePrincipal(principal) ? 'certificate' : 'token',
    // A client certificate's serial names the exact credential used (PCI DSS 10.2: origin).
    origin:
      `request:${req.id} ip:${req.ip ?? '-'}` +
      (isCertificatePrincipal(principal) ? ` cert:${principal.certificateSerial}` : ''),
  };
}

export function actorOf(req: Request): Actor {
  const { subject, origin } = callerOf(req);
  return { subject, origin };
}
