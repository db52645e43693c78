/**
 * SQL of the card vault. Functions take a knex handle or a transaction, so a service decides where
 * a transaction begins and every statement inside it runs on it.
 */
import type { Knex } from 'knex';
import type { OutboundEvent } from '../events/event-types.js';
import { partOf, writeTogether } from '../db/write-together.js';
import { outboxPart } from '../events/outbox-store.js';
import type { IdentifierKind } from '../crypto/field-crypto.js';
import type { Brand } from './pan.js';

type Db = Knex | Knex.Transaction;

export interface CardRow {
  token: string;
  shopper_ref: string;
  /** Written from detectBrand only (pan.ts). */
  brand: Brand | null;
  last4: string | null;
  expiry_month: number | null;
  expiry_year: number | null;
  pan_ciphertext: Buffer | null;
  pan_key_version: number | null;
  /** When retention purged the PAN ciphertext (retention-store.ts); null while it is kept. */
  pan_purged_at?: Date | null;
  /** Last use by detokenise or a tokenise hit, at most a day old when marked (retention-store.ts). */
  last_used_at?: Date | null;
  created_at: Date;
}

export interface FingerprintKey {
  readonly version: number;
  readonly fingerprint: Buffer;
  /** Whether new rows are written under this version (published or active), or it is only matched. */
  readonly indexing: boolean;
}

const CARD_COLUMNS = [
  'c.token',
  'c.shopper_ref',
  'c.brand',
  'c.last4',
  'c.expiry_month',
  'c.expiry_year',
  'c.pan_ciphertext',
  'c.pan_key_version',
  'c.pan_purged_at',
  'c.last_used_at',
  'c.created_at',
];

/** The card holding any of these fingerprints (one per readable MAC version of one identifier). */
export async function findCardByFingerprints(db: Db, keys: readonly FingerprintKey[]): Promise<CardRow | undefined> {
  if (keys.length === 0) return undefined;
  const row = (await db('identifier_fingerprints as f')
    .join('cards as c', 'c.token', 'f.token')
    .whereIn(
      ['f.mac_key_version', 'f.fingerprint'],
      keys.map((k) => [k.version, k.fingerprint]),
    )
    .first(CARD_COLUMNS)) as CardRow | undefined;
  return row;
}

/**
 * For each set of fingerprints (one identifier's, one per readable MAC version), the card holding any
 * of them: many lookups in one statement (see ReadBatcher), each answered as `findCardByFingerprints`.
 */
export async function findCardsByFingerprintSets(
  db: Db,
  sets: readonly (readonly FingerprintKey[])[],
): Promise<(CardRow | undefined)[]> {
  // PGlite answers bytea as a Uint8Array, pg as a Buffer.
  const keyOf = (version: number, fingerprint: Uint8Array): string =>
    `${version}:${Buffer.from(fingerprint).toString('base64')}`;
  const wanted = new Map<string, FingerprintKey>();
  for (const set of sets) for (const k of set) wanted.set(keyOf(k.version, k.fingerprint), k);
  if (wanted.size === 0) return sets.map(() => undefined);
  const rows = (await db('identifier_fingerprints as f')
    .join('cards as c', 'c.token', 'f.token')
    .whereIn(
      ['f.mac_key_version', 'f.fingerprint'],
      [...wanted.values()].map((k) => [k.version, k.fingerprint]),
    )
    .select('f.mac_key_version as fp_version', 'f.fingerprint as fp', ...CARD_COLUMNS)) as (CardRow & {
    fp_version: number;
    fp: Uint8Array;
  })[];
  const byKey = new Map<string, CardRow>();
  for (const { fp_version: version, fp, ...card } of rows) byKey.set(keyOf(version, fp), card);
  return sets.map((set) => {
    for (const k of set) {
      const card = byKey.get(keyOf(k.version, k.fingerprint));
      if (card !== undefined) return card;
    }
    return undefined;
  });
}

export async function findCard(
  db: Db,
  token: string,
  options: { forUpdate?: boolean } = {},
): Promise<CardRow | undefined> {
  const query = db('cards as c').where('c.token', token).first(CARD_COLUMNS);
  if (options.forUpdate === true) void query.forUpdate();
  return (await query) as CardRow | undefined;
}

export interface NewCard {
  readonly token: string;
  readonly shopperRef: string;
  readonly brand: Brand | null;
  readonly last4: string | null;
  readonly expiryMonth: number | null;
  readonly expiryYear: number | null;
  readonly panCiphertext: Buffer | null;
  readonly panKeyVersion: number | null;
}

export interface NewIdentifier {
  readonly id: string;
  readonly token: string;
  readonly kind: IdentifierKind;
  readonly namespace: string | null;
  readonly valueCiphertext: Buffer | null;
  readonly valueKeyVersion: number | null;
}

/**
 * Inserts the identifier and its fingerprints. Returns false, having inserted nothing that the caller
 * should keep, when any fingerprint already exists: another card (or a concurrent request) owns the
 * identifier, and the caller must roll back and look again.
 */
export async function insertIdentifier(
  trx: Knex.Transaction,
  identifier: NewIdentifier,
  fingerprints: readonly FingerprintKey[],
  now: Date,
): Promise<boolean> {
  // Fingerprints are written only under indexing versions; lookups match every readable version.
  await trx('card_identifiers').insert(identifierRow(identifier, now));
  const rows = fingerprintRows(identifier, fingerprints, now);
  const inserted = (await trx('identifier_fingerprints')
    .insert(rows)
    .onConflict(['mac_key_version', 'fingerprint'])
    .ignore()
    .returning('mac_key_version')) as unknown[];
  return inserted.length === rows.length;
}

/** One first sighting: the shopper, the card, its identifier, its fingerprints and its events. */
export interface NewCardSighting {
  readonly card: NewCard;
  readonly identifier: NewIdentifier;
  readonly fingerprints: readonly FingerprintKey[];
  readonly events: readonly OutboundEvent[];
  readonly now: Date;
}

/**
 * First sightings in one statement (so one round trip, and atomic without an explicit transaction),
 * however many: the shoppers, the cards, their identifiers, one fingerprint per indexing MAC version,
 * and the outbox's `shopper.created` events. Fingerprints go in in one fixed order (version
 * descending, then bytes), so two such statements never wait on each other in a cycle.
 *
 * Throws when a fingerprint already exists (see {@link isFingerprintTaken}), having written nothing:
 * the identifier belongs to another card, or a concurrent first sighting won; the caller looks again.
 */
export async function insertNewCards(db: Db, sightings: readonly NewCardSighting[]): Promise<void> {
  const fingerprints = sightings
    .flatMap(({ identifier, fingerprints: keys, now }) => fingerprintRows(identifier, keys, now))
    .sort((a, b) => b.mac_key_version - a.mac_key_version || Buffer.compare(a.fingerprint, b.fingerprint));
  if (sightings.some(({ fingerprints: keys }) => !keys.some((f) => f.indexing))) {
    throw new Error('no identifier-mac version is indexing (published or active): a new card could never be found');
  }
  await writeTogether(db, [
    outboxPart(sightings.flatMap((s) => s.events)),
    partOf(
      db('shoppers').insert(sightings.map(({ card, now }) => ({ shopper_ref: card.shopperRef, created_at: now }))),
    ),
    partOf(db('cards').insert(sightings.map(({ card, now }) => ({ ...newCardRow(card, now), updated_at: now })))),
    partOf(db('card_identifiers').insert(sightings.map(({ identifier, now }) => identifierRow(identifier, now)))),
    partOf(db('identifier_fingerprints').insert(fingerprints)),
  ]);
}

/** The stored row of a card just created. */
export function newCardRow(card: NewCard, now: Date): CardRow {
  return {
    token: card.token,
    shopper_ref: card.shopperRef,
    brand: card.brand,
    last4: card.last4,
    expiry_month: card.expiryMonth,
    expiry_year: card.expiryYear,
    pan_ciphertext: card.panCiphertext,
    pan_key_version: card.panKeyVersion,
    created_at: now,
  };
}

function identifierRow(identifier: NewIdentifier, now: Date): Record<string, unknown> {
  return {
    id: identifier.id,
    token: identifier.token,
    kind: identifier.kind,
    namespace: identifier.namespace,
    value_ciphertext: identifier.valueCiphertext,
    value_key_version: identifier.valueKeyVersion,
    created_at: now,
  };
}

/**
 * One fingerprint row per indexing MAC version (version descending, a fixed order, so two
 * transactions never wait on each other in a cycle).
 */
function fingerprintRows(identifier: NewIdentifier, fingerprints: readonly FingerprintKey[], now: Date) {
  return fingerprints
    .filter((f) => f.indexing)
    .sort((a, b) => b.version - a.version)
    .map((f) => ({
      mac_key_version: f.version,
      fingerprint: f.fingerprint,
      identifier_id: identifier.id,
      token: identifier.token,
      created_at: now,
    }));
}

/** The error of {@link insertNewCards} when an identifier is already someone's (or just became so). */
export function isFingerprintTaken(error: unknown): boolean {
  return isUniqueViolation(error, 'identifier_fingerprints_pkey');
}

function isUniqueViolation(error: unknown, constraint: string): boolean {
  const e = error as { code?: unknown; constraint?: unknown; message?: unknown };
  return (
    e.code === '23505' &&
    (e.constraint === constraint || (typeof e.message === 'string' && e.message.includes(constraint)))
  );
}

/** Keeps the latest expiry seen for a card (a reissued card keeps its PAN and gets a later expiry). */
export async function advanceExpiry(db: Db, token: string, month: number, year: number, now: Date): Promise<void> {
  await db('cards')
    .where('token', token)
    .andWhere((q) => {
      void q.whereNull('expiry_year').orWhereRaw('(expiry_year, expiry_month) < (?, ?)', [year, month]);
    })
    .update({ expiry_month: month, expiry_year: year, updated_at: now, row_version: db.raw('row_version + 1') });
}

export async function setCardPan(
  trx: Knex.Transaction,
  token: string,
  pan: {
    ciphertext: Buffer;
    keyVersion: number;
    brand: Brand;
    last4: string;
    expiryMonth: number | null;
    expiryYear: number | null;
  },
  now: Date,
): Promise<boolean> {
  const updated = await trx('cards')
    .where('token', token)
    .whereNull('pan_ciphertext')
    .update({
      pan_ciphertext: pan.ciphertext,
      pan_key_version: pan.keyVersion,
      // A PAN presented again for a purged card (its fingerprints dropped by policy): kept again.
      pan_purged_at: null,
      brand: pan.brand,
      last4: pan.last4,
      ...(pan.expiryMonth === null ? {} : { expiry_month: pan.expiryMonth, expiry_year: pan.expiryYear }),
      updated_at: now,
      row_version: trx.raw('row_version + 1'),
    });
  return updated === 1;
}

/** Moves every card of one shopper to another (a loyalty merge); returns how many moved. */
export async function moveShopperCards(
  trx: Knex.Transaction,
  fromShopper: string,
  toShopper: string,
  now: Date,
): Promise<number> {
  return trx('cards')
    .where({ shopper_ref: fromShopper })
    .update({ shopper_ref: toShopper, row_version: trx.raw('row_version + 1'), updated_at: now });
}

/**
 * A card for a shopper that already exists (a reissued card linked by a card-updater event): the card,
 * its identifier and its fingerprints, in the caller's transaction. False, having written nothing the
 * caller should keep, when the identifier was taken meanwhile (the caller rolls back and looks again).
 */
export async function insertCardForShopper(
  trx: Knex.Transaction,
  card: NewCard,
  identifier: NewIdentifier,
  fingerprints: readonly FingerprintKey[],
  now: Date,
): Promise<boolean> {
  await trx('cards').insert({ ...newCardRow(card, now), updated_at: now });
  return insertIdentifier(trx, identifier, fingerprints, now);
}

/**
 * Marks a card replaced by another (a card-updater event). Only a card not yet replaced: the first
 * replacement recorded stays (a redelivery, or a second updater event for the same old card, changes
 * nothing). Returns whether this call marked it.
 */
export async function markReplaced(
  trx: Knex.Transaction,
  token: string,
  replacedBy: string,
  now: Date,
): Promise<boolean> {
  const updated = await trx('cards')
    .where({ token })
    .whereNull('replaced_by')
    .update({ replaced_by: replacedBy, replaced_at: now, updated_at: now, row_version: trx.raw('row_version + 1') });
  return updated === 1;
}

/** The card that replaced this one, if any. */
export async function replacementOf(db: Db, token: string): Promise<string | undefined> {
  const row = (await db('cards').where({ token }).first('replaced_by')) as { replaced_by: string | null } | undefined;
  return row?.replaced_by ?? undefined;
}
