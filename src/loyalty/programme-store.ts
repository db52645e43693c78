/**
 * SQL of the programme versions (immutable rows; a new version is an insert). Functions take a knex
 * handle or the caller's transaction.
 */
import type { Knex } from 'knex';
import { toVersion, type ProgrammeVersion, type VersionRow } from './programme.js';

type Db = Knex | Knex.Transaction;

/** Every version, oldest first (a handful of rows: read whole, picked from in memory). */
export async function programmeVersions(db: Db): Promise<ProgrammeVersion[]> {
  return ((await db('loyalty_programme_versions').orderBy('version')) as VersionRow[]).map(toVersion);
}

export async function programmeVersion(db: Db, version: number): Promise<ProgrammeVersion> {
  const row = (await db('loyalty_programme_versions').where({ version }).first()) as VersionRow | undefined;
  if (row === undefined) throw new Error(`programme version ${version} does not exist`);
  return toVersion(row);
}

export async function currentProgramme(db: Db): Promise<ProgrammeVersion> {
  return toVersion((await db('loyalty_programme_versions').orderBy('version', 'desc').first()) as VersionRow);
}

/** The newest version, locked: versions are serialised on it (two changes, two consecutive versions). */
export async function lockLatestVersion(trx: Knex.Transaction): Promise<VersionRow> {
  return (await trx('loyalty_programme_versions').orderBy('version', 'desc').forUpdate().first()) as VersionRow;
}

export async function insertVersion(trx: Knex.Transaction, row: VersionRow): Promise<void> {
  await trx('loyalty_programme_versions').insert(row);
}
