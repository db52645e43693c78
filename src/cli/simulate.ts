/**
 * `npm run simulate`: the `stripe trigger` of this service. Signs and sends realistic gateway
 * deliveries to a running service with the configured (or development) secrets, and shows what
 * they did to the shopper's points. The work is src/simulate/; this is its command line (commander)
 * and its composition: configuration, the currency exponents points are counted by, output.
 *
 *   npm run simulate -- purchase
 *   npm run simulate -- platform authorise --card 4111111111111111 --amount 42.00
 */
import { Option, type Command } from 'commander';
import { containsCardData, maskCardData } from '../card-data/card-data-guard.js';
import { loadConfig } from '../config/config.js';
import { currencyExponent } from '../loyalty/programme.js';
import { amounts } from '../simulate/amounts.js';
import { DEFAULT_TEST_PAN, parseCard } from '../simulate/cards.js';
import { SCENARIOS, type Scenario } from '../simulate/payloads.js';
import { PROVIDERS, SIMULATOR_SCOPES, simulatorSettings, type Provider } from '../simulate/settings.js';
import { simulatePurchase, simulateScenario, type SimulatorContext } from '../simulate/simulator.js';
import { cliCommand, cliProgram, isMain, onRun, runProgram, type CliHelp } from './cli-program.js';
import { UsageError } from './usage-error.js';

/** What every simulate command's help says beyond its options. */
const HELP: CliHelp = {
  env: [
    'WEBHOOK_PLATFORM_SECRETS',
    'WEBHOOK_ADYEN_HMAC_KEYS',
    'WEBHOOK_ADYEN_BASIC_AUTH',
    'WEBHOOK_ADYEN_ENVIRONMENT',
    'WEBHOOK_STRIPE_SECRETS',
    'DATA_DIR',
    'DATABASE_URL',
    'ALLOW_DEVELOPMENT_DEFAULTS',
    'NODE_ENV',
    'AUTH_JWKS_URL',
    'AUTH_PUBLIC_KEYS',
    'AUTH_ISSUER',
    'AUTH_AUDIENCE',
    'HOST',
    'PORT',
  ],
  exitCodes: {
    0: 'every delivery was accepted (2xx) and the balance read',
    1:
      'the service refused a delivery (e.g. 401 WEBHOOK_SIGNATURE_INVALID: a wrong secret), an API call failed, ' +
      'the service could not be reached, or the configuration is unusable',
    2: 'usage: an unknown command or option, a bad --card, --amount or --currency',
  },
  details: `Secrets: the service's own variables, read the way it reads them (the first of each list signs).
With none of the three secret lists set on the embedded default, the development secrets the service
generated into DATA_DIR/dev-webhook-secrets.json (start the service once first). The development
token issuer is trusted as the service trusts it (DATABASE_URL, ALLOW_DEVELOPMENT_DEFAULTS, AUTH_*);
if it is not, pass --token (scopes: ${SIMULATOR_SCOPES.join(' ')}). HOST and PORT make the default
--url (http://127.0.0.1:8080).

Cards: only the schemes' and gateways' published test PANs (4111111111111111, 5555555555554444,
378282246310005, …), card tokens (tok_…) or PARs. Output shows a card's last four only. Adyen and
Stripe name cards by alias and fingerprint: the simulator links one to the card first
(POST /v1/tokens/{token}/identifiers), as an integrator does.

Safety: refused with NODE_ENV=production or WEBHOOK_ADYEN_ENVIRONMENT=live unless --allow-production;
plain http:// only to a loopback host; the configured credentials (Adyen Basic auth, a minted bearer)
go only to the configured service (HOST:PORT), never to another --url (pass --token for it). Every
line printed passes the card-data masking, and a --payment holding a card number is refused.`,
};

interface CommonOptions {
  readonly url?: string;
  readonly token?: string;
  readonly secret?: string;
  readonly allowProduction?: boolean;
}

function common(command: Command): Command {
  return command
    .option('--url <url>', 'the service (default: http://HOST:PORT of its configuration, http://127.0.0.1:8080)')
    .option('--token <bearer>', `bearer token for the API calls (default: minted by the development issuer)`)
    .option('--secret <secret>', "sign with this secret instead of the configured one (the provider's format)")
    .option(
      '--allow-production',
      'run although NODE_ENV=production or WEBHOOK_ADYEN_ENVIRONMENT=live (refused without it)',
      false,
    );
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

/** A loopback host name (`localhost`, 127.0.0.0/8, ::1). */
export function isLoopback(hostname: string): boolean {
  return LOOPBACK.has(hostname.toLowerCase()) || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/**
 * Refusals before anything is sent (docs/card-data.md, the simulator): a production or live
 * configuration without --allow-production (the simulator mints tokens, links cards and writes
 * payments), and plain http:// to any host but loopback (secrets and card data on the wire).
 */
function refuseUnsafeTarget(options: CommonOptions, url: URL): void {
  const production = process.env['NODE_ENV'] === 'production' || process.env['WEBHOOK_ADYEN_ENVIRONMENT'] === 'live';
  if (production && options.allowProduction !== true) {
    throw new Error(
      'refusing to run against a production configuration (NODE_ENV=production or WEBHOOK_ADYEN_ENVIRONMENT=live): ' +
        'the simulator writes payments and points; pass --allow-production if that is really meant',
    );
  }
  if (url.protocol === 'http:' && !isLoopback(url.hostname)) {
    throw new UsageError(
      '--url: plain http:// is allowed to a loopback host only (localhost, 127.0.0.1, ::1); use https://',
    );
  }
}

async function run(options: CommonOptions, body: (ctx: SimulatorContext) => Promise<void>): Promise<void> {
  if (options.url !== undefined && !/^https?:\/\/[^/]+/.test(options.url)) {
    throw new UsageError('--url must be an http:// or https:// URL');
  }
  const early = options.url === undefined ? undefined : new URL(options.url);
  if (early !== undefined) refuseUnsafeTarget(options, early);
  const config = loadConfig();
  const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
  const configured = `http://${host.includes(':') ? `[${host}]` : host}:${config.port === 0 ? 8080 : config.port}`;
  const url = options.url ?? configured;
  const target = new URL(url);
  refuseUnsafeTarget(options, target);
  // Configured credentials (Adyen Basic auth, a minted bearer) go to the configured service only.
  const configuredService = target.origin === new URL(configured).origin;
  await body({
    url,
    settings: simulatorSettings(config, { secret: options.secret, token: options.token, configuredService }),
    amounts: amounts(currencyExponent),
    now: () => new Date(),
    // Every line passes the card-data guard's masking (a PAN in a reply or an argument is never echoed).
    print: (line) => process.stdout.write(`${maskCardData(line)}\n`),
  });
}

function input<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

const PROVIDER_HELP: Readonly<Record<Provider, string>> = {
  platform: 'the platform gateway: Standard Webhooks deliveries to POST /v1/webhooks/platform',
  adyen: 'Adyen standard notifications (HMAC per item) to POST /v1/webhooks/adyen',
  stripe: 'Stripe events (Stripe-Signature) to POST /v1/webhooks/stripe',
};

const SCENARIO_HELP: Readonly<Record<Scenario, string>> = {
  authorise: 'an online authorisation: points pending until capture (prints the payment id to capture)',
  capture: 'the capture of --payment: its points become available',
  refund: 'a (partial) refund of --amount on --payment: points taken back in proportion',
  'in-store': 'an in-store payment: captured at once (an auto-capture channel), points available',
};

export function simulateProgram(): Command {
  const program = cliProgram({
    name: 'simulate',
    invocation: 'npm run simulate --',
    description: 'Sign and send test payment webhooks to a running service; show the shopper points they earn.',
    ...HELP,
  });
  for (const provider of PROVIDERS) {
    const group = cliCommand(program, { name: provider, description: PROVIDER_HELP[provider], ...HELP });
    for (const scenario of SCENARIOS) {
      const command = common(
        cliCommand(group, { name: scenario, description: SCENARIO_HELP[scenario], ...HELP })
          .option('--card <pan|token|par>', 'the card: a test PAN, a card token or a PAR', DEFAULT_TEST_PAN)
          .option('--amount <amount>', 'in currency units, e.g. 42.00', '42.00')
          .option('--currency <code>', 'ISO 4217', 'EUR')
          .option('--payment <id>', 'the payment (required for capture and refund; authorise makes one)'),
      );
      onRun(command, async (self) => {
        const opts = self.opts<CommonOptions & { card: string; amount: string; currency: string; payment?: string }>();
        const card = input(() => parseCard(opts.card));
        if (opts.payment !== undefined && containsCardData(opts.payment)) {
          throw new UsageError('--payment must not hold a card number (the service refuses such ids: 422)');
        }
        if ((scenario === 'capture' || scenario === 'refund') && opts.payment === undefined) {
          throw new UsageError(`${scenario} needs --payment: the payment id an earlier authorise printed`);
        }
        await run(opts, async (ctx) => {
          const amount = input(() => ctx.amounts.parse(opts.amount, opts.currency));
          await simulateScenario(ctx, { provider, scenario, card, amount, payment: opts.payment });
        });
        return 0;
      });
    }
  }
  const purchase = common(
    cliCommand(program, {
      name: 'purchase',
      description: "a whole story: authorise → capture → partial refund, the shopper's points after each",
      ...HELP,
    })
      .addOption(new Option('--provider <provider>', 'the gateway').choices(PROVIDERS).default('platform'))
      .option('--card <pan|token|par>', 'the card: a test PAN, a card token or a PAR', DEFAULT_TEST_PAN)
      .option('--amount <amount>', 'in currency units', '42.00')
      .option('--refund <amount>', 'the partial refund (default: a quarter, in whole units)')
      .option('--currency <code>', 'ISO 4217', 'EUR'),
  );
  onRun(purchase, async (self) => {
    const opts = self.opts<
      CommonOptions & { provider: Provider; card: string; amount: string; refund?: string; currency: string }
    >();
    {
      const card = input(() => parseCard(opts.card));
      await run(opts, async (ctx) => {
        const amount = input(() => ctx.amounts.parse(opts.amount, opts.currency));
        const refund =
          opts.refund === undefined
            ? ctx.amounts.quarterOf(amount)
            : input(() => ctx.amounts.parse(opts.refund as string, opts.currency));
        if (refund.value >= amount.value)
          throw new UsageError('--refund must be less than --amount (a partial refund)');
        await simulatePurchase(ctx, { provider: opts.provider, card, amount, refund });
      });
    }
    return 0;
  });
  return program;
}

/** Runs one invocation; returns its exit code. */
export async function runSimulate(argv: readonly string[]): Promise<number> {
  return runProgram(simulateProgram(), argv);
}

if (isMain(import.meta.url)) {
  process.exitCode = await runSimulate(process.argv.slice(2));
}
