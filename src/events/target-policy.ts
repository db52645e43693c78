/**
 * Where outbound events may go (SSRF defence). A subscriber's URL is checked when the subscription
 * is created and again before every delivery (DNS can change): https only (http in development), no
 * credentials in the URL, and every address the host resolves to must be public. Loopback, private,
 * carrier-grade NAT, link-local (cloud metadata lives at 169.254.169.254), unique-local, multicast,
 * reserved, benchmarking and documentation ranges are refused. IPv6 must be global unicast
 * (2000::/3) outside the IANA special-purpose blocks; an IPv6 address that a translator or tunnel
 * turns into an IPv4 one (IPv4-mapped, SIIT, NAT64 64:ff9b::/96, 6to4) is judged by that IPv4
 * address, and Teredo and local-use NAT64 are refused outright. The delivery then connects to the
 * address that was checked (see http-sender.ts), never to a fresh lookup.
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
  | 'url-too-long'
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

/**
 * IPv4 ranges that are not public unicast (IANA IPv4 Special-Purpose Address Registry, plus
 * multicast and the old class E). The first match names the reason.
 */
const IPV4_RANGES: readonly (readonly [RefusalReason, string, number])[] = [
  ['unspecified', '0.0.0.0', 8],
  ['private', '10.0.0.0', 8],
  ['carrier-grade-nat', '100.64.0.0', 10],
  ['loopback', '127.0.0.0', 8],
  ['link-local', '169.254.0.0', 16],
  ['private', '172.16.0.0', 12],
  ['reserved', '192.0.0.0', 24],
  ['documentation', '192.0.2.0', 24],
  // The 6to4 relay anycast prefix (deprecated by RFC 7526): a relay, not a receiver.
  ['reserved', '192.88.99.0', 24],
  ['private', '192.168.0.0', 16],
  // Benchmarking (RFC 2544).
  ['reserved', '198.18.0.0', 15],
  ['documentation', '198.51.100.0', 24],
  ['documentation', '203.0.113.0', 24],
  ['multicast', '224.0.0.0', 4],
  // Class E and the limited broadcast 255.255.255.255.
  ['reserved', '240.0.0.0', 4],
];

/**
 * IPv6 ranges refused by name. Only global unicast (2000::/3) is ever accepted; inside it the IANA
 * IPv6 Special-Purpose Address Registry blocks are refused here. Prefixes that embed an IPv4
 * address a translator would reach (NAT64, 6to4, SIIT, IPv4-mapped) are decoded before this table
 * is read (see {@link classifyIpv6}).
 */
const IPV6_RANGES: readonly (readonly [RefusalReason, string, number])[] = [
  ['unspecified', '::', 128],
  ['loopback', '::1', 128],
  // Discard-only (RFC 6666).
  ['reserved', '100::', 64],
  // Local-use NAT64 (RFC 8215): the operator picks where the IPv4 address sits, so it cannot be
  // decoded with certainty; never globally reachable, so refused whole.
  ['reserved', '64:ff9b:1::', 48],
  // 2001::/23, IETF protocol assignments: Teredo (2001::/32, which tunnels to an IPv4 client address
  // we would have to un-obfuscate), benchmarking, ORCHID, AMT, AS112… none is a receiver.
  ['reserved', '2001::', 23],
  ['documentation', '2001:db8::', 32],
  ['documentation', '3fff::', 20],
  ['unique-local', 'fc00::', 7],
  ['link-local', 'fe80::', 10],
  ['reserved', 'fec0::', 10],
  ['multicast', 'ff00::', 8],
];

const V4_TABLE = IPV4_RANGES.map(([reason, base, prefix]) => ({
  reason,
  base: ipv4ToNumber(base) as number,
  mask: prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0,
}));

const V6_TABLE = IPV6_RANGES.map(([reason, base, prefix]) => ({
  reason,
  base: ipv6ToBigInt(base) as bigint,
  shift: BigInt(128 - prefix),
}));

const GLOBAL_UNICAST = { base: ipv6ToBigInt('2000::') as bigint, shift: 125n };

/** Why an address may not be a webhook target, or undefined when it is a public address. */
export function classifyAddress(address: string): RefusalReason | undefined {
  const family = net.isIP(address);
  if (family === 4) return classifyIpv4(ipv4ToNumber(address) as number);
  if (family === 6) {
    const value = ipv6ToBigInt(address.split('%')[0] as string);
    return value === undefined ? 'url-invalid' : classifyIpv6(value);
  }
  return 'url-invalid';
}

function classifyIpv4(value: number): RefusalReason | undefined {
  return V4_TABLE.find((r) => (value & r.mask) >>> 0 === r.base)?.reason;
}

/**
 * IPv6: an address that makes a translator or tunnel reach an IPv4 address is judged by that IPv4
 * address (on a DNS64/NAT64 network 64:ff9b::a00:5 reaches 10.0.0.5); anything else must be global
 * unicast and outside the special-purpose blocks.
 */
function classifyIpv6(value: bigint): RefusalReason | undefined {
  const low32 = Number(value & 0xffffffffn);
  const high96 = value >> 32n;
  // ::ffff:a.b.c.d (IPv4-mapped) and ::ffff:0:a.b.c.d (SIIT, RFC 7915 IPv4-translated).
  if (high96 === 0xffffn || high96 === 0xffff0000n) return classifyIpv4(low32);
  // ::a.b.c.d (IPv4-compatible, deprecated): never a route, but name the IPv4 reason when there is one.
  if (high96 === 0n && value > 1n) return classifyIpv4(low32) ?? 'reserved';
  // 64:ff9b::/96, the NAT64 well-known prefix (RFC 6052).
  if (high96 === 0x0064ff9b0000000000000000n) return classifyIpv4(low32);
  // 2002::/16, 6to4 (RFC 3056): the IPv4 address of the far end is in bits 16–47.
  if (value >> 112n === 0x2002n) return classifyIpv4(Number((value >> 80n) & 0xffffffffn));
  const named = V6_TABLE.find((r) => value >> r.shift === r.base >> r.shift)?.reason;
  if (named !== undefined) return named;
  return value >> GLOBAL_UNICAST.shift === GLOBAL_UNICAST.base >> GLOBAL_UNICAST.shift ? undefined : 'reserved';
}

function ipv4ToNumber(address: string): number | undefined {
  const parts = address.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) return undefined;
  return parts.reduce((n, p) => n * 256 + p, 0);
}

/** An IPv6 address (any notation, dotted IPv4 tail included) as a 128-bit integer. */
function ipv6ToBigInt(address: string): bigint | undefined {
  if (net.isIPv6(address) === false) return undefined;
  let text = address;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted !== null) {
    const v4 = ipv4ToNumber(dotted[1] as string);
    if (v4 === undefined) return undefined;
    text = `${text.slice(0, dotted.index)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const headWords = head === '' ? [] : head.split(':');
  const tailWords = tail === undefined || tail === '' ? [] : tail.split(':');
  const missing = 8 - headWords.length - tailWords.length;
  if (missing < 0 || (tail === undefined && missing !== 0)) return undefined;
  const words = [...headWords, ...Array<string>(missing).fill('0'), ...tailWords];
  return words.reduce((n, w) => (n << 16n) | BigInt(parseInt(w, 16)), 0n);
}

/**
 * The longest target URL, in bytes of its normalised form (`href`: non-ASCII is percent-encoded, so
 * 2,048 characters of input can be three times as many bytes). Comfortably within what is stored
 * and logged; the uniqueness of URLs rests on their hash, not on an index of the text.
 */
export const MAX_TARGET_URL_BYTES = 2048;

/** Parses and checks the URL's form (scheme, credentials, length); no network. */
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
  if (Buffer.byteLength(url.href, 'utf8') > MAX_TARGET_URL_BYTES) throw new TargetRefused('url-too-long');
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
