/**
 * How the key CLI shows things: tables for people, JSON for machines, the PCI DSS 3.6.1.1 inventory
 * report (Markdown), and the re-encryption progress (a bar on a terminal, plain lines otherwise).
 * Nothing here ever receives key material or card data: only ids, versions, counts and dates.
 */
import type { ReencryptProgress } from '../keys/reencrypt.js';
import type { KeyVersionInfo } from '../keys/key-manager.js';
import type { MasterKeyLocation } from '../keys/master-key-types.js';

const date = (d: Date | null): string => (d === null ? '-' : d.toISOString().slice(0, 10));
const num = (n: number): string => n.toLocaleString('en-US');

export function keyTable(keys: readonly KeyVersionInfo[]): string {
  const header = [
    'purpose',
    'v',
    'state',
    'algorithm',
    'bits',
    'created',
    'activated',
    'retired',
    'period',
    'days left',
    'rows',
  ];
  const rows = keys.map((k) => [
    k.purpose,
    String(k.version),
    k.state,
    k.algorithm,
    String(k.strengthBits),
    date(k.createdAt),
    date(k.activatedAt),
    date(k.retiredAt ?? k.destroyedAt),
    `${k.cryptoperiodDays} d`,
    k.daysLeft === null ? '-' : k.overdue ? `OVERDUE (${k.daysLeft})` : String(k.daysLeft),
    Object.keys(k.rows).length === 0
      ? '-'
      : `${num(k.rowsTotal)} (${Object.entries(k.rows)
          .map(([s, n]) => `${s} ${num(n)}`)
          .join(', ')})`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n') + '\n';
}

/**
 * The master key's cryptoperiod: 2 years, the upper end NIST SP 800-57 Part 1 (5.3.6) gives a
 * symmetric key-wrapping key's originator-usage period. It wraps only data keys and seals (a few
 * dozen values, re-wrapped at every rotation), so use does not wear it; the period bounds the
 * exposure of a silently compromised KEK and keeps the rotation procedure practised.
 */
export const MASTER_KEY_CRYPTOPERIOD_DAYS = 730;

/** Where the current master key lives and how old it is: `keys list` and `keys inventory`. */
export interface MasterKeyInfo {
  readonly kekId: string;
  readonly source: string;
  readonly where: string;
  readonly tokenLabel: string | null;
  readonly keyLabel: string | null;
  readonly keyCheckValue: string | null;
  readonly since: string | null;
  readonly cryptoperiodDays: number;
  readonly expiresAt: string | null;
  readonly daysLeft: number | null;
  readonly overdue: boolean;
  /**
   * The key's split into custodians' shares, when one is active for it (split knowledge, 3.6.1.2):
   * M of N, who holds a share, and whether the record's seal verified under this key (a record a
   * database writer made up does not).
   */
  readonly split: MasterKeySplitInfo | null;
}

export interface MasterKeySplitInfo {
  readonly id: string;
  readonly threshold: number;
  readonly total: number;
  readonly holders: readonly string[];
  readonly createdAt: string;
  readonly sealVerified: boolean;
}

export function masterKeyInfo(
  source: { readonly keyId: string; readonly description: string; readonly location?: MasterKeyLocation | undefined },
  since: Date | undefined,
  now: Date,
  split: MasterKeySplitInfo | null = null,
): MasterKeyInfo {
  const expires =
    since === undefined ? undefined : new Date(since.getTime() + MASTER_KEY_CRYPTOPERIOD_DAYS * 86_400_000);
  const daysLeft = expires === undefined ? null : Math.floor((expires.getTime() - now.getTime()) / 86_400_000);
  return {
    kekId: source.keyId,
    source: source.location?.source ?? 'unknown',
    where: source.location?.where ?? source.description,
    tokenLabel: source.location?.tokenLabel ?? null,
    keyLabel: source.location?.keyLabel ?? null,
    keyCheckValue: source.location?.keyCheckValue ?? null,
    since: since?.toISOString() ?? null,
    cryptoperiodDays: MASTER_KEY_CRYPTOPERIOD_DAYS,
    expiresAt: expires?.toISOString() ?? null,
    daysLeft,
    overdue: daysLeft !== null && daysLeft < 0,
    split,
  };
}

export function masterKeyLines(m: MasterKeyInfo): string[] {
  return [
    `master key ${m.kekId}: source ${m.source}` +
      (m.tokenLabel === null ? '' : `, token "${m.tokenLabel}"`) +
      (m.keyLabel === null ? '' : `, key label "${m.keyLabel}"`) +
      `, key check value ${m.keyCheckValue ?? '-'}`,
    `  where: ${m.where}`,
    `  since ${m.since?.slice(0, 10) ?? '-'}, cryptoperiod ${m.cryptoperiodDays} d, ` +
      (m.daysLeft === null ? 'days left -' : m.overdue ? `OVERDUE (${m.daysLeft})` : `${m.daysLeft} days left`),
    ...(m.split === null
      ? []
      : [
          `  split ${m.split.id}: ${m.split.threshold} of ${m.split.total} shares, held by ${m.split.holders.join(', ')}` +
            ` (since ${m.split.createdAt.slice(0, 10)}; record seal ${m.split.sealVerified ? 'verified' : 'DOES NOT VERIFY'})`,
        ]),
  ];
}

export interface InventoryDocument {
  readonly format: 'loyalty-vault/key-inventory/v1';
  readonly generatedAt: string;
  readonly database: string;
  readonly keyStores: readonly { readonly name: string; readonly description: string; readonly holds: string }[];
  /** The master key this inventory was taken with: where it lives, its KCV and cryptoperiod. */
  readonly currentMasterKey: MasterKeyInfo;
  readonly masterKeys: readonly {
    readonly kekId: string;
    readonly description: string;
    readonly state: string;
    readonly createdAt: string;
  }[];
  readonly keys: readonly (KeyVersionInfo & { readonly purposeDescription: string; readonly keyStore: string })[];
}

export const PURPOSE_DESCRIPTIONS: Readonly<Record<string, string>> = {
  'pan-encryption': 'Encrypts card numbers (PAN), PAR and gateway alias values at rest (data-encrypting key)',
  'identifier-mac': 'Keyed fingerprints (HMAC) of PAN, PAR and aliases for lookups (PCI DSS 3.5.1.1)',
  'audit-signing': 'Signs audit-trail exports for auditors (detached JWS)',
  'mtls-client-ca': 'Signs the mTLS client certificates of card-data clients (tills, checkout, platform gateway)',
  'subscription-secret': 'Encrypts the signing secrets of outbound-event subscriptions (webhooks to CRMs) at rest',
  master: 'Key-encrypting key: wraps every data key (envelope encryption)',
};

export function inventoryMarkdown(inv: InventoryDocument): string {
  const out: string[] = [
    '# Cryptographic key inventory (PCI DSS 3.6.1.1)',
    '',
    `Generated ${inv.generatedAt} from ${inv.database}.`,
    '',
    '## Key stores',
    '',
    '| Store | Description | Holds |',
    '| --- | --- | --- |',
    ...inv.keyStores.map((s) => `| ${s.name} | ${s.description} | ${s.holds} |`),
    '',
    '## Master keys (key-encrypting keys)',
    '',
    ...masterKeyLines(inv.currentMasterKey).map((l) => (l.startsWith('  ') ? `  - ${l.trim()}` : `- Current: ${l}`)),
    '',
    '| KEK id | Algorithm | Strength | Store | State | Created |',
    '| --- | --- | --- | --- | --- | --- |',
    ...inv.masterKeys.map(
      (m) =>
        `| ${m.kekId} | AES-256-GCM key wrap | 256 bits | ${m.description} | ${m.state} | ${m.createdAt.slice(0, 10)} |`,
    ),
    '',
    '## Data keys',
    '',
    '| Purpose | Version | Algorithm | Strength | State | Created | Activated | Retired / destroyed | Cryptoperiod | Expires | Rows protected | Wrapped by |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...inv.keys.map(
      (k) =>
        `| ${k.purpose} | ${k.version} | ${k.algorithm} | ${k.strengthBits} bits | ${k.state}${k.overdue ? ' **OVERDUE**' : ''} | ${date(k.createdAt)} | ${date(k.activatedAt)} | ${date(k.retiredAt ?? k.destroyedAt)} | ${k.cryptoperiodDays} days | ${date(k.expiresAt)} | ${num(k.rowsTotal)} | ${k.state === 'destroyed' ? '- (material destroyed)' : k.kekId} |`,
    ),
    '',
    '## Purposes',
    '',
    ...Object.entries(PURPOSE_DESCRIPTIONS).map(([p, d]) => `- **${p}**: ${d}`),
    '',
    'Architecture, procedures and evidence: docs/key-management.md.',
    '',
  ];
  return out.join('\n');
}

/** Progress on stderr: a redrawn bar on a terminal, a plain line every few seconds otherwise. */
export function progressPrinter(
  stream: NodeJS.WritableStream & { isTTY?: boolean },
  tty: boolean,
): (p: ReencryptProgress) => void {
  let lastLine = 0;
  return (p) => {
    const fraction = p.rowsTotal === 0 ? 1 : Math.min(p.rowsDone / p.rowsTotal, 1);
    const eta = p.etaSeconds === undefined ? '?' : `${Math.ceil(p.etaSeconds)} s`;
    const text = `${p.fieldSet}: ${num(p.rowsDone)}/${num(p.rowsTotal)} rows, ${num(Math.round(p.rowsPerSecond))} rows/s, ETA ${eta}`;
    if (tty) {
      const width = 30;
      const filled = Math.round(fraction * width);
      stream.write(
        `\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ${text}\x1b[K`,
      );
      return;
    }
    if (Date.now() - lastLine >= 2000 || p.rowsDone >= p.rowsTotal) {
      lastLine = Date.now();
      stream.write(`progress ${text}\n`);
    }
  };
}
