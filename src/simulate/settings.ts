/**
 * What the simulator signs and authenticates with, from the same configuration the service reads
 * (`loadConfig`: the same environment variables, the same data folder):
 * - each provider's secret: the first of WEBHOOK_PLATFORM_SECRETS, WEBHOOK_ADYEN_HMAC_KEYS,
 *   WEBHOOK_STRIPE_SECRETS; on the embedded default with none set, the development secrets the
 *   service generated into DATA_DIR/dev-webhook-secrets.json (read, never created here: the service
 *   makes them on its first start); `--secret` overrides the provider's;
 * - Adyen's HTTP Basic credentials (WEBHOOK_ADYEN_BASIC_AUTH) and environment (the `live` flag);
 * - a bearer token to read the shopper's balance through the API: `--token`, or one minted the way
 *   `npm run token` mints it, when the configuration trusts the development issuer.
 */
import fs from 'node:fs';
import type { Config } from '../config/config.js';
import { loadDevIssuer } from '../auth/dev-issuer.js';

export const PROVIDERS = ['platform', 'adyen', 'stripe'] as const;
export type Provider = (typeof PROVIDERS)[number];

/** The scopes the simulator's API calls need: resolve the card, link the gateway's alias, read the balance. */
export const SIMULATOR_SCOPES = ['tokens:read', 'tokens:write', 'loyalty:admin'] as const;

/** Where the variable (or the development file) that holds a provider's secret is named in messages. */
export const SECRET_VARIABLES: Readonly<Record<Provider, string>> = {
  platform: 'WEBHOOK_PLATFORM_SECRETS',
  adyen: 'WEBHOOK_ADYEN_HMAC_KEYS',
  stripe: 'WEBHOOK_STRIPE_SECRETS',
};

export interface ProviderSecret {
  readonly secret: string;
  /** For messages: the variable, the development file or `--secret`. */
  readonly source: string;
}

export interface SimulatorSettings {
  secretFor(provider: Provider): ProviderSecret;
  readonly adyenBasicAuth: { readonly username: string; readonly password: string } | undefined;
  readonly adyenLive: boolean;
  /** A bearer token for the API calls, minted on first use. */
  bearer(): Promise<string>;
}

export interface SettingsOptions {
  readonly secret?: string | undefined;
  readonly token?: string | undefined;
  /**
   * The target is the configured service (HOST:PORT of this configuration). Otherwise the configured
   * credentials are never sent: no Adyen Basic auth, no minted bearer (only an explicit `--token`).
   */
  readonly configuredService?: boolean;
}

export function simulatorSettings(config: Config, options: SettingsOptions): SimulatorSettings {
  let minted: Promise<string> | undefined;
  return {
    secretFor(provider) {
      if (options.secret !== undefined) return { secret: options.secret, source: '--secret' };
      return configuredSecret(config, provider);
    },
    adyenBasicAuth: options.configuredService === false ? undefined : config.webhooks.adyenBasicAuth,
    adyenLive: config.webhooks.adyenEnvironment === 'live',
    bearer() {
      if (options.token !== undefined) return Promise.resolve(options.token);
      if (options.configuredService === false) {
        return Promise.reject(
          new Error('--url is not the configured service: no bearer is minted for another host; pass --token for it'),
        );
      }
      minted ??= mintDevelopmentToken(config);
      return minted;
    },
  };
}

function configuredSecret(config: Config, provider: Provider): ProviderSecret {
  const variable = SECRET_VARIABLES[provider];
  const webhooks = config.webhooks;
  const file = webhooks.generatedDevFile;
  if (file !== undefined) {
    if (!fs.existsSync(file)) {
      throw new Error(
        `no development webhook secrets in ${file} yet: start the service on this data folder first (npm start), ` +
          `or set ${variable}`,
      );
    }
    const dev = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    const secret = dev[variable];
    if (typeof secret !== 'string' || secret.length === 0) throw new Error(`${file} holds no ${variable}`);
    return { secret, source: file };
  }
  const list = { platform: webhooks.platformSecrets, adyen: webhooks.adyenHmacKeys, stripe: webhooks.stripeSecrets }[
    provider
  ];
  const first = list?.[0];
  if (first === undefined) {
    throw new Error(
      `${variable} is not set: the service refuses ${provider} deliveries too (403); set it, or pass --secret`,
    );
  }
  return { secret: first, source: variable };
}

async function mintDevelopmentToken(config: Config): Promise<string> {
  if (config.auth.keys.source !== 'dev-issuer' || config.nodeEnv === 'production') {
    throw new Error(
      'this configuration does not trust the development token issuer (AUTH_JWKS_URL or AUTH_PUBLIC_KEYS is set): ' +
        `pass --token <bearer token with ${SIMULATOR_SCOPES.join(' ')}>`,
    );
  }
  const issuer = await loadDevIssuer(config.auth.keys.file);
  return issuer.sign({
    issuer: config.auth.issuer,
    audience: config.auth.audience,
    subject: 'simulator',
    scopes: SIMULATOR_SCOPES,
    ttlSeconds: 600,
  });
}
