/**
 * The application clock: what "now" is for every decision on time (payment and inbox timestamps,
 * points earned, redeemed and expired, event signatures, secret and certificate expiry). One is made
 * in the core (src/core.ts) and injected into every feature through its factory; a test passes its
 * own to move time. Leases and rate-limit windows stay on the database's clock on purpose: several
 * instances must agree on them (see events/dispatcher.ts and ratelimit/).
 *
 * A function, so it fits the `now: () => Date` parameters the services already take.
 */
export type Clock = () => Date;

/** The machine's wall clock. */
export const systemClock: Clock = () => new Date();
