/**
 * What makes a campaign definition acceptable beyond its schema (types, ranges and patterns are
 * openapi.yaml's): rules that relate fields. A refusal is `CAMPAIGN_DEFINITION_INVALID` with a
 * `problems` list of stable reasons (our words only: never the caller's input).
 */
import { AppError } from '../errors/app-error.js';
import { isTimeZone, minutesOf } from './campaign-rules.js';
import type { StoredDefinition } from './campaign-store.js';

export type DefinitionProblem =
  | 'ends_before_it_starts'
  | 'amount_range_needs_currency'
  | 'amount_range_empty'
  | 'time_zone_required'
  | 'time_zone_unknown'
  | 'time_window_empty'
  | 'time_invalid'
  | 'effect_gives_nothing'
  | 'first_and_every_nth_purchase';

/** The reasons a definition is refused; empty when it is acceptable. Pure. */
export function definitionProblems(d: StoredDefinition): DefinitionProblem[] {
  const problems: DefinitionProblem[] = [];
  const c = d.conditions;
  if (d.endsAt !== undefined && Date.parse(d.endsAt) <= Date.parse(d.startsAt)) problems.push('ends_before_it_starts');
  const ranged = c.minAmount !== undefined || c.maxAmount !== undefined;
  if (ranged && c.currency === undefined) problems.push('amount_range_needs_currency');
  if (c.minAmount !== undefined && c.maxAmount !== undefined && c.minAmount > c.maxAmount) {
    problems.push('amount_range_empty');
  }
  if ((c.daysOfWeek !== undefined || c.timeWindow !== undefined) && c.timeZone === undefined) {
    problems.push('time_zone_required');
  }
  if (c.timeZone !== undefined && !isTimeZone(c.timeZone)) problems.push('time_zone_unknown');
  if (c.timeWindow !== undefined) {
    const valid = [c.timeWindow.from, c.timeWindow.to].every((t) => /^([01]\d|2[0-3]):[0-5]\d$/.test(t));
    if (!valid) problems.push('time_invalid');
    else if (minutesOf(c.timeWindow.from) === minutesOf(c.timeWindow.to)) problems.push('time_window_empty');
  }
  if (c.firstPurchaseOnly === true && c.everyNthPurchase !== undefined) problems.push('first_and_every_nth_purchase');
  const e = d.effect;
  if ((e.kind === 'multiplier' && e.factor <= 1) || (e.kind !== 'multiplier' && e.points <= 0)) {
    problems.push('effect_gives_nothing');
  }
  if (d.maxBonusPerPayment === 0) problems.push('effect_gives_nothing');
  return problems;
}

const FIRST_INSTANT = Date.UTC(1970, 0, 1);
const LAST_INSTANT = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

/**
 * A contract `date-time` as a UTC ISO instant, or `CAMPAIGN_DEFINITION_INVALID` (`time_invalid`)
 * when it is not one this service can store and answer: a leap second ("23:59:60", valid RFC 3339,
 * not a JavaScript date) or a year outside 1970–9999 once its offset is applied.
 */
export function instantOf(text: string): string {
  const ms = Date.parse(text);
  if (!Number.isFinite(ms) || ms < FIRST_INSTANT || ms > LAST_INSTANT) {
    const problems: DefinitionProblem[] = ['time_invalid'];
    throw new AppError('CAMPAIGN_DEFINITION_INVALID', {
      detail: `The campaign definition is not acceptable: ${problems.join(', ')}.`,
      extensions: { problems },
    });
  }
  return new Date(ms).toISOString();
}

export function checkDefinition(d: StoredDefinition): void {
  const problems = definitionProblems(d);
  if (problems.length > 0) {
    throw new AppError('CAMPAIGN_DEFINITION_INVALID', {
      detail: `The campaign definition is not acceptable: ${problems.join(', ')}.`,
      extensions: { problems },
    });
  }
}
