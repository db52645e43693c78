/**
 * `npm run simulate`: signed deliveries sent to a running service, per provider and scenario, and the
 * `purchase` story (authorise → capture → partial refund), printing each delivery's HTTP status and
 * response body and the shopper's balance after. Nothing here knows the service's internals: it
 * speaks HTTP, signs with the service's signing code, and reads results back through the API.
 */
import { ApiRefusal, api, linkAlias, readBalance, resolveCard, type Api, type BalanceAnswer } from './api.js';
import type { Amounts, Money } from './amounts.js';
import { describeCard, testExpiry, type SimulatedCard } from './cards.js';
import { signedDelivery } from './deliveries.js';
import { derivedAlias, newPaymentId, type GatewayCard, type Scenario } from './payloads.js';
import type { Provider, SimulatorSettings } from './settings.js';

export interface SimulatorContext {
  readonly url: string;
  readonly settings: SimulatorSettings;
  readonly amounts: Amounts;
  readonly now: () => Date;
  /** One line of output (stdout). */
  readonly print: (line: string) => void;
}

/** The service refused a delivery: the CLI prints its one line and exits 1. */
export class DeliveryRefused extends Error {}

export interface ScenarioRequest {
  readonly provider: Provider;
  readonly scenario: Scenario;
  readonly card: SimulatedCard;
  readonly amount: Money;
  readonly payment?: string | undefined;
}

export interface PurchaseRequest {
  readonly provider: Provider;
  readonly card: SimulatedCard;
  readonly amount: Money;
  readonly refund: Money;
}

interface Session {
  readonly client: Api;
  readonly bearer: string;
  readonly card: GatewayCard;
  readonly shopper: string;
}

export async function simulateScenario(ctx: SimulatorContext, request: ScenarioRequest): Promise<void> {
  if ((request.scenario === 'capture' || request.scenario === 'refund') && request.payment === undefined) {
    throw new Error(`${request.scenario} needs --payment: the id an earlier authorise printed`);
  }
  const payment = request.payment ?? newPaymentId(request.provider);
  const session = await open(ctx, request.provider, request.card);
  ctx.print(
    `${request.provider} ${request.scenario}: ${describeCard(request.card)}, ${ctx.amounts.format(request.amount)}, ` +
      `payment ${payment} → ${ctx.url}`,
  );
  await deliver(ctx, session, request.provider, request.scenario, payment, request.amount, '');
  ctx.print(`balance: ${(await readBalance(session.client, session.bearer, session.shopper)).text}`);
  if (request.scenario === 'authorise') {
    ctx.print(
      `next: npm run simulate -- ${request.provider} capture --payment ${payment} --amount ${plain(ctx, request.amount)} ` +
        `--currency ${request.amount.currency} --card ${cardArgument(request.card, session.card)}`,
    );
  }
}

export async function simulatePurchase(ctx: SimulatorContext, request: PurchaseRequest): Promise<void> {
  const payment = newPaymentId(request.provider);
  const session = await open(ctx, request.provider, request.card);
  ctx.print(
    `purchase on ${request.provider}: ${describeCard(request.card)}, ${ctx.amounts.format(request.amount)}, ` +
      `refund ${ctx.amounts.format(request.refund)}, payment ${payment}, shopper ${session.shopper} → ${ctx.url}`,
  );
  const steps: readonly [Scenario, Money][] = [
    ['authorise', request.amount],
    ['capture', request.amount],
    ['refund', request.refund],
  ];
  let last: BalanceAnswer | undefined;
  for (const [index, [scenario, amount]] of steps.entries()) {
    await deliver(ctx, session, request.provider, scenario, payment, amount, `${index + 1}. `);
    last = await readBalance(session.client, session.bearer, session.shopper);
    const { available, pending, lifetimeEarned } = last.balance;
    ctx.print(`   points: available ${available}, pending ${pending}, lifetime earned ${lifetimeEarned}`);
  }
  ctx.print(`balance: ${last?.text ?? ''}`);
}

async function open(ctx: SimulatorContext, provider: Provider, card: SimulatedCard): Promise<Session> {
  const client = api(ctx.url);
  const bearer = await ctx.settings.bearer();
  ctx.settings.secretFor(provider); // a missing secret is said before anything is sent
  const identifier =
    card.kind === 'pan'
      ? { pan: card.pan, ...testExpiry(ctx.now()) }
      : card.kind === 'par'
        ? { par: card.par }
        : { token: card.token };
  const resolved = await resolveCard(client, bearer, identifier);
  if (provider !== 'platform') {
    const namespace = provider === 'adyen' ? 'adyen.alias' : 'stripe.fingerprint';
    await linkAlias(client, bearer, resolved.token, { namespace, value: derivedAlias(provider, resolved.token) });
  }
  return {
    client,
    bearer,
    shopper: resolved.shopperReference,
    card: {
      platform: identifier,
      token: resolved.token,
      brand: resolved.brand ?? (card.kind === 'pan' ? card.brand : undefined),
      last4: resolved.last4 ?? (card.kind === 'pan' ? card.last4 : undefined),
      par: card.kind === 'par' ? card.par : undefined,
    },
  };
}

async function deliver(
  ctx: SimulatorContext,
  session: Session,
  provider: Provider,
  scenario: Scenario,
  payment: string,
  amount: Money,
  prefix: string,
): Promise<void> {
  const delivery = signedDelivery(
    provider,
    { scenario, payment, amount, card: session.card, now: ctx.now() },
    ctx.settings,
  );
  const answer = await session.client.request('POST', delivery.path, {
    headers: delivery.headers,
    body: delivery.body,
  });
  ctx.print(`${prefix}${scenario}: POST ${delivery.path} ${delivery.eventType} ${ctx.amounts.format(amount)}`);
  ctx.print(`${' '.repeat(prefix.length)}${answer.status} ${answer.text}`);
  if (answer.status < 200 || answer.status > 299) {
    const refusal = new ApiRefusal(`${provider} ${delivery.eventType}`, answer);
    const hint =
      answer.status === 401
        ? ` (signed with the secret from ${ctx.settings.secretFor(provider).source}: is it the one the service uses?)`
        : '';
    throw new DeliveryRefused(`the service refused the delivery: ${refusal.message}${hint}`);
  }
}

function plain(ctx: SimulatorContext, money: Money): string {
  return ctx.amounts.format(money).split(' ')[0] ?? '';
}

/** How the `next:` hint names the card again: never the PAN, its token instead. */
function cardArgument(card: SimulatedCard, resolved: GatewayCard): string {
  return card.kind === 'par' ? card.par : resolved.token;
}
