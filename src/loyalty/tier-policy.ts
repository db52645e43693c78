/**
 * What makes a tier policy acceptable beyond its schema (openapi.yaml's `TierPolicy` checks types
 * and ranges): `TIER_POLICY_INVALID` with a `problems` list of stable reasons (never the caller's input).
 */
import { AppError } from '../errors/app-error.js';
import { tierPolicyProblems, type TierPolicy } from './tiers.js';

export function checkTierPolicy(policy: TierPolicy): void {
  const problems = tierPolicyProblems(policy);
  if (problems.length > 0) {
    throw new AppError('TIER_POLICY_INVALID', {
      detail: `The tier policy is not acceptable: ${problems.join(', ')}.`,
      extensions: { problems },
    });
  }
}
