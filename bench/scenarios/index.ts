/**
 * Every benchmark scenario, by name. A new scenario is a module `bench/scenarios/<name>.ts` exporting
 * a {@link Scenario}, listed here; `npm run bench -- <name>` runs it alone, no argument runs all.
 */
import type { Scenario } from '../lib/scenario.js';
import { authGet } from './auth-get.js';
import { balance } from './balance.js';
import { redeem } from './redeem.js';
import { rotate } from './rotate.js';
import { soak } from './soak.js';
import { tokeniseKnown, tokeniseNew, tokenisePkcs11 } from './tokenise.js';
import { webhooks, webhooksBurst } from './webhooks.js';

export const scenarios: readonly Scenario[] = [
  authGet,
  tokeniseKnown,
  tokeniseNew,
  tokenisePkcs11,
  webhooks,
  webhooksBurst,
  balance,
  redeem,
  rotate,
  soak,
];
