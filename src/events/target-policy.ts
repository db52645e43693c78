/**
 * Where outbound events may go (SSRF defence). A subscriber's URL is checked when the subscription
 * is created and again before every delivery (DNS can change): https only (http in development), no
 * credentials in the URL, and every address the host resolves to must be public. Loopback, private,
 * carrier-grade NAT, link-local (cloud metadata lives at 169.254.169.254), unique-local, multicast,
 * reserved and documentation ranges are refused, also when written as IPv4-mapped IPv6. The delivery
 * then connects to the address that was checked (see http-sender.ts), never to a fresh lookup.
 *
 * `allowPrivate` lifts the range check for development receivers on localhost; it is refused in
 * production by the configuration.
 */
import dns from 'node:dns/promises';
import net from 'node:net';
import { AppError } from '../errors/app-error.js';

export interface ResolvedAddress {
  readonly address: string;
  readonly family: 4 | 6;
}

/** Every address of a host name. Injectable: tests map their fake hosts without DNS. */
export type HostResolver = (hostname: string) => Promise<readonly ResolvedAddress[]>;

export const systemResolver: HostResolver = async (hostname) =>
  (await dns.lookup(hostname, { all: true, verbatim: true })).map((a) => ({
    address: a.address,
    family: a.family === 6 ? 6 : 4,
  }));

export interface TargetPolicy {
  readonly resolver: HostResolver;
  /** http:// accepted (development only). */
  readonly allowHttp: boolean;
  /** Private, loopback and link-local targets accepted (development only). */
  readonly allowPrivate: boolean;
}

export type RefusalReason =
  | 'url-invalid'
  | 'https-required'
  | 'credentials-in-url'
  | 'unresolvable'
  | 'unspecified'
  | 'loopback'
  | 'private'
  | 'carrier-grade-nat'
  | 'link-local'
  | 'unique-local'
  | 'multicast'
  | 'reserved'
  | 'documentation';

/** A refused target: `reason` is from a closed vocabulary, so it is safe in logs, errors and metrics. */
export class TargetRefused extends Error {
  constructor(readonly reason: RefusalReason) {
    super(`the webhook target is refused: ${reason}`);
    this.name = 'TargetRefused';
  }

  toAppError(): AppError {
    return new AppError('WEBHOOK_TARGET_REFUSED', {
      detail: `The target URL is not accepted (${this.reason}).`,
      extensions: { reason: this.reason },
      cause: this,
    });
  }
}

const RANGES: readonly (readonly [RefusalReason, 'ipv4' | 'ipv6', string, number])[] = [
  ['unspecified', 'ipv4', '0.0.0.0', 8],
  ['private', 'ipv4', '10.0.0.0', 8],
  ['carrier-grade-nat', 'ipv4', '100.64.0.0', 10],
  ['loopback', 'ipv4', '127.0.0.0', 8],
  ['link-local', 'ipv4', '169.254.0.0', 16],
  ['private', 'ipv4', '172.16.0.0', 12],
  ['reserved', 'ipv4', '192.0.0.0', 24],
  ['documentation', 'ipv4', '192.0.2.0', 24],
  ['private', 'ipv4', '192.168.0.0', 16],
  ['reserved', 'ipv4', '198.18.0.0', 15],
  ['documentation', 'ipv4', '198.51.100.0', 24],
  ['documentation', 'ipv4', '203.0.113.0', 24],
  ['multicast', 'ipv4', '224.0.0.0', 4],
  ['reserved', 'ipv4', '240.0.0.0', 4],
  ['unspecified', 'ipv6', '::', 128],
  ['loopback', 'ipv6', '::1', 128],
  ['reserved', 'ipv6', '100::', 64],
  ['documentation', 'ipv6', '2001:db8::', 32],
  ['unique-local', 'ipv6', 'fc00::', 7],
  ['link-local', 'ipv6', 'fe80::', 10],
  ['reserved', 'ipv6', 'fec0::', 10],
  ['multicast', 'ipv6', 'ff00::', 8],
];

const BLOCKS = RANGES.map(([reason, type, base, prefix]) => {
  const list = new net.BlockList();
  list.addSubnet(base, prefix, type);
  return { reason, type, list };
});

/** Why an address may not be a webhook target, or undefined when it is a public address. */
export function classifyAddress(address: string): RefusalReason | undefined {
  const family = net.isIP(address);
  if (family === 0) return 'url-invalid';
  if (family === 6) {
    const embedded = embeddedIpv4(address);
    if (embedded !== undefined) return classifyAddress(embedded);
  }
  const type = family === 4 ? 'ipv4' : 'ipv6';
  return BLOCKS.find((b) => b.type === type && b.list.check(address, type))?.reason;
}

/** The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible (::a.b.c.d) address. */
function embeddedIpv4(address: string): string | undefined {
  // Normalised through the URL parser: ::ffff:127.0.0.1 and ::ffff:7f00:1 both become ::ffff:7f00:1.
  let host: string;
  try {
    host = new URL(`http://[${address.split('%')[0] as string}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
  const match = /^::(?:ffff:)?([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
  if (match === null) return undefined;
  const high = parseInt(match[1] as string, 16);
  const low = parseInt(match[2] as string, 16);
  return [high >> 8, high & 255, low >> 8, low & 255].join('.');
}

/** Parses and checks the URL's form (scheme, credentials); no network. */
export function parseTargetUrl(value: string, policy: Pick<TargetPolicy, 'allowHttp'>): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new TargetRefused('url-invalid');
  }
  if (url.protocol !== 'https:' && !(policy.allowHttp && url.protocol === 'http:')) {
    throw new TargetRefused(url.protocol === 'http:' ? 'https-required' : 'url-invalid');
  }
  if (url.username !== '' || url.password !== '') throw new TargetRefused('credentials-in-url');
  if (url.hostname === '' || url.hash !== '') throw new TargetRefused('url-invalid');
  return url;
}

/**
 * The address to connect to: the first of the host's addresses, once every one of them is checked
 * (a host that resolves to one public and one private address is refused: an attacker controls
 * which one a client would pick).
 */
export async function resolveTarget(url: URL, policy: TargetPolicy): Promise<ResolvedAddress> {
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const literal = net.isIP(host);
  let addresses: readonly ResolvedAddress[];
  if (literal !== 0) {
    addresses = [{ address: host, family: literal === 6 ? 6 : 4 }];
  } else {
    try {
      addresses = await policy.resolver(host);
    } catch {
      throw new TargetRefused('unresolvable');
    }
  }
  const [first] = addresses;
  if (first === undefined) throw new TargetRefused('unresolvable');
  if (!policy.allowPrivate) {
    for (const { address } of addresses) {
      const reason = classifyAddress(address);
      if (reason !== undefined) throw new TargetRefused(reason);
    }
  }
  return first;
}
