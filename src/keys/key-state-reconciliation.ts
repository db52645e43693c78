/**
 * Detection of key states changed outside the key CLI (PCI DSS 3.6.1.2, 3.7.7, 10.3.4).
 *
 * `data_keys.state` and its stamps are plain columns: a database writer can set a retired version
 * back to `published` (every instance loads it again: it decrypts, matches lookups and, for a MAC
 * key, indexes), make a decrypt-only or retired version `active` again, or move `activated_at` to
 * hide an overdue key. Every legitimate change is made by the key manager in one transaction with a
 * keyed audit entry for that version (`key:<purpose>:v<n>`):
 *
 * - `key.created` (details.state `active` for a first version, `published` for a rotation's),
 * - `key.published` (a rotation published it), `key.activated` (it became the active version; the
 *   version active before it became `decrypt-only` in the same transaction),
 * - `key.retired`, `key.destroyed`.
 *
 * This replays those entries in chain order, counting only entries whose MAC verifies
 * (`auditEntryIntact`: forging one needs the audit-chain key), and compares the state the trail
 * implies with every row's state and stamps. Any difference is a finding: a state no entry
 * authorised, a state the trail has moved past, a stamp without its entry (or an entry without its
 * stamp, or one moved by more than {@link STAMP_TOLERANCE_MS}), a row the trail never created, a
 * version the trail created whose row is gone, a key entry whose MAC does not verify. Deleting the
 * entries that would contradict a row breaks the keyed chain instead (`keys audit verify`).
 *
 * Run by `keys audit verify` and `keys status`. It detects; it does not refuse: until the next run an
 * altered state is in effect on every instance that reloads its ring. Given the master key, it also
 * checks the reference-digest key against its `reference-key.*` entries (purpose `reference-digest`;
 * reference-digests.ts `reconcileReferenceKey`): gone or replaced is a finding (and the service refuses).
 */
import type { Knex } from 'knex';
import { auditEntryIntact } from '../audit/audit-log.js';
import { READABLE_STATES, type KeyState } from './key-states.js';
import { allKeyVersions, type DataKeyRecord } from './key-version-store.js';
import { keyLifecycleEntries, type KeyLifecycleEntryRow } from './publication-evidence-store.js';
import { reconcileReferenceKey, type ReferenceKeyWrapper } from './reference-digests.js';

export const KEY_LIFECYCLE_ACTIONS = ['key.created', 'key.published', 'key.activated', 'key.retired', 'key.destroyed'];

/**
 * How far a stamp may be from the time of the entry that authorised it. The manager stamps from the
 * database clock and writes the entry in the same transaction (a first version and a publication from
 * the process clock, likewise): milliseconds apart. A minute leaves room for that and nothing useful
 * to an insider (a cryptoperiod is counted in days).
 */
export const STAMP_TOLERANCE_MS = 60_000;

/** One version whose row the trail contradicts (or a key entry that does not verify). */
export interface KeyStateFinding {
  readonly purpose: string;
  readonly version: number;
  /** The row's state; null when the trail names a version that has no row. */
  readonly rowState: KeyState | null;
  /** The state the intact entries imply; null when no intact entry created the version. */
  readonly trailState: KeyState | null;
  readonly problem: string;
}

/** What the intact entries say about one version. */
export interface TrailVersion {
  state: KeyState;
  createdAt: Date;
  /** When it became active: the `key.activated` entry, or its `key.created` for a first version. */
  activatedAt: Date | null;
  /** Whether that was by `key.activated` (stamped from the same clock, so its time is compared). */
  activatedByEntry: boolean;
  retiredAt: Date | null;
  destroyedAt: Date | null;
}

export interface KeyEntry {
  readonly seq: number;
  readonly action: string;
  readonly purpose: string;
  readonly version: number;
  readonly at: Date;
  readonly details: Record<string, unknown>;
}

const RESOURCE = /^key:([a-z][a-z0-9-]*):v([1-9]\d{0,8})$/;

/** The lifecycle entry as the derivation reads it, or undefined for another resource. */
export function keyEntry(row: KeyLifecycleEntryRow): KeyEntry | undefined {
  const match = RESOURCE.exec(row.resource);
  if (match === null) return undefined;
  const details = (typeof row.details === 'string' ? JSON.parse(row.details) : (row.details ?? {})) as Record<
    string,
    unknown
  >;
  return {
    seq: Number(row.seq),
    action: row.action,
    purpose: match[1]!,
    version: Number(match[2]),
    at: new Date(row.occurred_at),
    details,
  };
}

/**
 * The state every version is in according to `entries` (intact, in chain order), by
 * `purpose:version`. Pure: the manager's transitions replayed.
 */
export function trailStates(entries: readonly KeyEntry[]): Map<string, TrailVersion> {
  const states = new Map<string, TrailVersion>();
  for (const e of entries) {
    const id = `${e.purpose}:${e.version}`;
    const known = states.get(id);
    if (e.action === 'key.created') {
      const active = e.details['state'] === 'active';
      if (active) demoteActive(states, e.purpose, id);
      states.set(id, {
        state: active ? 'active' : 'published',
        createdAt: e.at,
        activatedAt: active ? e.at : null,
        // Created active: its activated_at is the creation's, compared like published_at (review M1).
        activatedByEntry: active,
        retiredAt: null,
        destroyedAt: null,
      });
      continue;
    }
    if (known === undefined) continue; // an entry for a version the trail never created: the row check says so
    switch (e.action) {
      case 'key.published':
        known.state = 'published';
        break;
      case 'key.activated':
        demoteActive(states, e.purpose, id);
        known.state = 'active';
        known.activatedAt = e.at;
        known.activatedByEntry = true;
        break;
      case 'key.retired':
        known.state = 'retired';
        known.retiredAt = e.at;
        break;
      case 'key.destroyed':
        known.state = 'destroyed';
        known.destroyedAt = e.at;
        break;
    }
  }
  return states;
}

/** activateVersion: every other active version of the purpose becomes decrypt-only. */
function demoteActive(states: Map<string, TrailVersion>, purpose: string, id: string): void {
  for (const [other, v] of states) {
    if (other.startsWith(`${purpose}:`) && other !== id && v.state === 'active') v.state = 'decrypt-only';
  }
}

type Stamp = Date | string | null;

function stampProblem(name: string, row: Stamp, trail: Date | null, compareTime: boolean): string | undefined {
  if (trail === null) return row === null ? undefined : `${name} is set but no intact entry records it`;
  if (row === null) return `${name} is empty but the trail records it at ${trail.toISOString()}`;
  const at = new Date(row);
  if (compareTime && Math.abs(at.getTime() - trail.getTime()) > STAMP_TOLERANCE_MS) {
    return `${name} ${at.toISOString()} differs from its entry's ${trail.toISOString()}`;
  }
  return undefined;
}

/** Rows against the trail (pure). */
export function compareRows(
  rows: readonly Pick<
    DataKeyRecord,
    'purpose' | 'version' | 'state' | 'published_at' | 'activated_at' | 'retired_at' | 'destroyed_at'
  >[],
  trail: ReadonlyMap<string, TrailVersion>,
): KeyStateFinding[] {
  const findings: KeyStateFinding[] = [];
  const seen = new Set<string>();
  for (const row of rows) {
    const id = `${row.purpose}:${row.version}`;
    seen.add(id);
    const t = trail.get(id);
    const base = { purpose: row.purpose, version: Number(row.version), rowState: row.state };
    if (t === undefined) {
      findings.push({
        ...base,
        trailState: null,
        problem: 'no intact key.created entry: the key CLI never created it',
      });
      continue;
    }
    const problems: string[] = [];
    if (row.state !== t.state) {
      problems.push(
        `the row says ${row.state} but the audit trail says ${t.state}` +
          (READABLE_STATES.includes(row.state) && !READABLE_STATES.includes(t.state)
            ? ' (readable again wherever the ring reloads)'
            : ''),
      );
    }
    for (const problem of [
      stampProblem('published_at', row.published_at as Stamp, t.createdAt, true),
      stampProblem('activated_at', row.activated_at as Stamp, t.activatedAt, t.activatedByEntry),
      stampProblem('retired_at', row.retired_at as Stamp, t.retiredAt, true),
      stampProblem('destroyed_at', row.destroyed_at as Stamp, t.destroyedAt, true),
    ]) {
      if (problem !== undefined) problems.push(problem);
    }
    if (problems.length > 0) findings.push({ ...base, trailState: t.state, problem: problems.join('; ') });
  }
  for (const [id, t] of trail) {
    if (seen.has(id)) continue;
    const [purpose, version] = id.split(':') as [string, string];
    findings.push({
      purpose,
      version: Number(version),
      rowState: null,
      trailState: t.state,
      problem: 'the audit trail created it but its row is gone',
    });
  }
  return findings;
}

/**
 * Every data key version's state and stamps against the keyed trail's successful key entries.
 * Empty when they agree.
 */
export async function reconcileKeyStates(
  db: Knex | Knex.Transaction,
  options: { readonly referenceKey?: ReferenceKeyWrapper } = {},
): Promise<KeyStateFinding[]> {
  const findings: KeyStateFinding[] = [];
  const intact: KeyEntry[] = [];
  for (const row of await keyLifecycleEntries(db, KEY_LIFECYCLE_ACTIONS)) {
    const entry = keyEntry(row);
    if (entry === undefined) continue;
    if (await auditEntryIntact(db, entry.seq)) {
      intact.push(entry);
    } else {
      findings.push({
        purpose: entry.purpose,
        version: entry.version,
        rowState: null,
        trailState: null,
        problem: `its ${entry.action} entry ${entry.seq} does not verify (not counted)`,
      });
    }
  }
  const rows = await allKeyVersions(db);
  const withRows = findings.map((f) => ({
    ...f,
    rowState: rows.find((r) => r.purpose === f.purpose && r.version === f.version)?.state ?? null,
  }));
  // The reference-digest key (not a data key): deleted or replaced behind the service's back.
  const reference =
    options.referenceKey === undefined
      ? []
      : (await reconcileReferenceKey(db, options.referenceKey)).map((f) => ({
          purpose: 'reference-digest',
          version: 1,
          rowState: null,
          trailState: null,
          problem: f.problem,
        }));
  return [...withRows, ...compareRows(rows, trailStates(intact)), ...reference];
}

/** One line per finding, naming the version. */
export function describeKeyStateFinding(f: KeyStateFinding): string {
  return `${f.purpose} v${f.version}: ${f.problem}`;
}
