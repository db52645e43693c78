/**
 * Programme rules: how many points a payment earns, when they become available and for how long.
 *
 * Rules are versioned and never edited: `PUT /v1/programme` adds a version effective from that
 * moment. A payment earns under the version in force when it was *authorised* (not when a delivery
 * happened to arrive), and every later effect on it (capture, refund, chargeback) reuses that
 * version, so a rule change never rewrites what was already earned and the arrival order of a
 * payment's events cannot change its points.
 */
import type { TierPolicy } from './tiers.js';

import {
  LEGACY_CONTROLS,
  PUBLISHED_CONTROLS,
  type EarningCap,
  type RedemptionVelocity,
  type SpentPointsPolicy,
} from './programme-controls.js';

export interface ProgrammeRules {
  /** Points per whole currency unit, for any currency without its own rate. */
  readonly pointsPerUnit: number;
  readonly currencyPointsPerUnit: Readonly<Record<string, number>>;
  /** e.g. `{ "in_store": 2 }`; a channel without an entry multiplies by 1. */
  readonly channelMultipliers: Readonly<Record<string, number>>;
  /** Minimum amount per currency, in minor units, below which a payment earns nothing. */
  readonly minimumAmount: Readonly<Record<string, number>>;
  /** Channels whose points are available on authorisation (no capture is awaited). */
  readonly autoCaptureChannels: readonly string[];
  readonly pointsLifetimeMonths: number;
  /** How far below zero a balance may go (default 0: never). */
  readonly negativeBalanceAllowance: number;
  /** Status levels and their multipliers (absent: no tiers); see tiers.ts. */
  readonly tiers?: TierPolicy;
  /** Abuse controls and holds (issue 21): see programme-controls.ts. */
  readonly holdWindowHours: number | null;
  readonly spentPointsPolicy: SpentPointsPolicy;
  readonly clawbackLimit: number;
  readonly earningCap: EarningCap | null;
  readonly redemptionVelocity: RedemptionVelocity | null;
}

/** What `PUT /v1/programme` fills in for a field it is not given (the first version's rules). */
export const DEFAULT_RULES: ProgrammeRules = {
  pointsPerUnit: 1,
  currencyPointsPerUnit: {},
  channelMultipliers: {},
  minimumAmount: {},
  autoCaptureChannels: ['in_store'],
  pointsLifetimeMonths: 12,
  negativeBalanceAllowance: 0,
  ...PUBLISHED_CONTROLS,
};

/** A version stored before these fields existed reads with {@link LEGACY_CONTROLS} (its rules as published). */
function withControls(rules: Partial<ProgrammeRules>): ProgrammeRules {
  return { ...LEGACY_CONTROLS, ...rules } as ProgrammeRules;
}

export interface ProgrammeVersion {
  readonly version: number;
  readonly rules: ProgrammeRules;
  readonly effectiveFrom: Date;
  readonly createdBy: string;
  readonly createdAt: Date;
}

/** ISO 4217 currencies whose minor unit is not 1/100 (the rest have two decimals). */
const EXPONENTS: Readonly<Record<string, number>> = {
  BIF: 0, CLP: 0, DJF: 0, GNF: 0, ISK: 0, JPY: 0, KMF: 0, KRW: 0, PYG: 0, RWF: 0, UGX: 0, UYI: 0,
  VND: 0, VUV: 0, XAF: 0, XOF: 0, XPF: 0,
  BHD: 3, IQD: 3, JOD: 3, KWD: 3, LYD: 3, OMR: 3, TND: 3,
  CLF: 4, UYW: 4,
}; // prettier-ignore

/**
 * The most points one payment can earn, base and campaign bonuses together: the largest amount
 * (openapi `Amount`, 10^11 minor units, in a currency without decimals) at the largest rate (100)
 * and channel multiplier (10). Base points cannot exceed it; campaign bonuses are cut to fit it, so
 * balances stay far inside the exact integer range.
 */
export const MAX_POINTS_PER_PAYMENT = 100_000_000_000 * 100 * 10;

export function currencyExponent(currency: string): number {
  return EXPONENTS[currency] ?? 2;
}

/**
 * Points for an amount in minor units: whole currency units (floored) × rate × channel multiplier,
 * floored. 12.99 EUR in store at 1 point per euro ×2 earns 24. Integer arithmetic on the whole units
 * keeps it exact for any amount a payment can carry.
 */
export function pointsFor(
  amountMinor: number,
  currency: string,
  channel: string | null,
  rules: ProgrammeRules,
  /** The shopper's tier multiplier pinned at authorisation (tiers.ts). */
  tierMultiplier = 1,
): number {
  if (amountMinor <= 0) return 0;
  if (amountMinor < (rules.minimumAmount[currency] ?? 0)) return 0;
  const wholeUnits = Math.floor(amountMinor / 10 ** currencyExponent(currency));
  const rate = rules.currencyPointsPerUnit[currency] ?? rules.pointsPerUnit;
  const multiplier = (channel === null ? 1 : (rules.channelMultipliers[channel] ?? 1)) * tierMultiplier;
  // Rates are decimals (0.01 point per yen): scale to integers before flooring, so 0.1 × 30 is 3.
  // A tier multiplier (≤ 10) could pass the per-payment bound: the bound holds whatever it is.
  return Math.min(MAX_POINTS_PER_PAYMENT, Math.floor(Math.round(wholeUnits * rate * multiplier * 1e6) / 1e6));
}

/** Lot expiry: availability plus the lifetime, on the same day of the month (clamped to its end). */
export function expiryOf(availableAt: Date, rules: ProgrammeRules): Date {
  const d = new Date(availableAt.getTime());
  const day = d.getUTCDate();
  d.setUTCDate(1);
  d.setUTCMonth(d.getUTCMonth() + rules.pointsLifetimeMonths);
  const lastDay = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 0)).getUTCDate();
  d.setUTCDate(Math.min(day, lastDay));
  return d;
}

export interface VersionRow {
  version: number;
  rules: ProgrammeRules | string;
  effective_from: Date;
  created_by: string;
  created_at: Date;
}

export function toVersion(row: VersionRow): ProgrammeVersion {
  return {
    version: row.version,
    rules: withControls(typeof row.rules === 'string' ? (JSON.parse(row.rules) as ProgrammeRules) : row.rules),
    effectiveFrom: row.effective_from,
    createdBy: row.created_by,
    createdAt: row.created_at,
  };
}

/**
 * The versions as `json_agg` of the table's rows gives them (timestamps as text, rules as an object),
 * e.g. read together with something else in one statement.
 */
export function programmeVersionsFromJson(value: unknown): ProgrammeVersion[] {
  const rows = (typeof value === 'string' ? JSON.parse(value) : value) as
    (Omit<VersionRow, 'effective_from' | 'created_at'> & { effective_from: string; created_at: string })[] | null;
  // No version at all: [] (versionInForce refuses it only if a version is actually needed).
  return (rows ?? []).map((r) =>
    toVersion({ ...r, effective_from: new Date(r.effective_from), created_at: new Date(r.created_at) }),
  );
}

/** The version in force at `at`: the newest effective by then (the first is in force since the epoch). */
export function versionInForce(versions: readonly ProgrammeVersion[], at: Date): ProgrammeVersion {
  const [first] = versions;
  if (first === undefined) throw new Error('the programme has no version');
  return versions.reduce((found, v) => (v.effectiveFrom <= at && v.version > found.version ? v : found), first);
}
