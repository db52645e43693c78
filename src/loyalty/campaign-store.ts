/**
 * SQL of the campaign versions (`loyalty_campaign_versions`: immutable rows; a change is an insert).
 * Functions take a knex handle or the caller's transaction.
 */
import type { Knex } from 'knex';
import type { CampaignDefinition, CampaignVersion } from './campaign-rules.js';

type Db = Knex | Knex.Transaction;

/** A definition as stored: the API's JSON shape (instants as ISO text). */
export type StoredDefinition = Omit<CampaignDefinition, 'startsAt' | 'endsAt'> & {
  readonly startsAt: string;
  readonly endsAt?: string;
};

export interface CampaignVersionRow {
  campaign_id: string;
  version: number;
  definition: StoredDefinition | string;
  effective_from: Date | string;
  created_by: string;
  created_at: Date | string;
}

export function toCampaignVersion(row: CampaignVersionRow): CampaignVersion {
  const stored = typeof row.definition === 'string' ? (JSON.parse(row.definition) as StoredDefinition) : row.definition;
  const { startsAt, endsAt, ...rest } = stored;
  return {
    campaignId: row.campaign_id,
    version: row.version,
    effectiveFrom: new Date(row.effective_from),
    definition: {
      ...rest,
      startsAt: new Date(startsAt),
      ...(endsAt === undefined ? {} : { endsAt: new Date(endsAt) }),
    },
    createdBy: row.created_by,
    createdAt: new Date(row.created_at),
  };
}

/** The versions as `json_agg` of the table's rows gives them (read with other things in one statement). */
export function campaignVersionsFromJson(value: unknown): CampaignVersion[] {
  const rows = (typeof value === 'string' ? JSON.parse(value) : value) as CampaignVersionRow[] | null;
  return (rows ?? []).map(toCampaignVersion);
}

/** Every version of every campaign (a handful of rows: read whole, picked from in memory). */
export async function allCampaignVersions(db: Db): Promise<CampaignVersion[]> {
  const rows = (await db('loyalty_campaign_versions').orderBy(['campaign_id', 'version'])) as CampaignVersionRow[];
  return rows.map(toCampaignVersion);
}

export async function versionsOfCampaign(db: Db, campaignId: string): Promise<CampaignVersion[]> {
  const rows = (await db('loyalty_campaign_versions')
    .where({ campaign_id: campaignId })
    .orderBy('version')) as CampaignVersionRow[];
  return rows.map(toCampaignVersion);
}

/**
 * The newest version of a campaign, read under a lock on its first version (versions of one
 * campaign are serialised on that row: two changes become two consecutive versions). The newest is
 * read by a second statement once the lock is held, so under READ COMMITTED it sees a version a
 * concurrent publish committed while we waited (locking the newest row itself would still answer
 * the old newest, and the insert would collide). Undefined for a campaign with no version.
 */
export async function lockLatestCampaignVersion(
  trx: Knex.Transaction,
  campaignId: string,
): Promise<CampaignVersion | undefined> {
  const head = (await trx('loyalty_campaign_versions')
    .where({ campaign_id: campaignId, version: 1 })
    .forUpdate()
    .first('version')) as { version: number } | undefined;
  if (head === undefined) return undefined;
  const row = (await trx('loyalty_campaign_versions')
    .where({ campaign_id: campaignId })
    .orderBy('version', 'desc')
    .first()) as CampaignVersionRow;
  return toCampaignVersion(row);
}

export async function insertCampaignVersion(
  trx: Knex.Transaction,
  row: Omit<CampaignVersionRow, 'definition'> & { definition: StoredDefinition },
): Promise<void> {
  await trx('loyalty_campaign_versions').insert({ ...row, definition: JSON.stringify(row.definition) });
}
