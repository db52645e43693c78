/**
 * The webhook secrets in force. From configuration; on the embedded development default (nothing
 * configured) one secret per provider is generated into DATA_DIR (mode 0600), so a newcomer can sign
 * test deliveries at once; the service logs where the file is.
 */
import { randomBytes } from 'node:crypto';
import type { WebhooksConfig } from '../config/config.js';
import { readOrCreateSecretFile } from '../config/dev-secret-file.js';

export interface WebhookSecrets {
  readonly platform: readonly string[];
  readonly adyenHmacKeys: readonly string[];
  readonly adyenBasicAuth: { readonly username: string; readonly password: string } | undefined;
  readonly stripe: readonly string[];
  readonly toleranceSeconds: number;
  readonly adyenEnvironment: 'test' | 'live';
  /** WEBHOOK_ADYEN_ENVIRONMENT was set: a notification must then carry a `live` flag that matches. */
  readonly adyenEnvironmentConfigured: boolean;
}

export async function loadWebhookSecrets(
  config: WebhooksConfig,
): Promise<{ secrets: WebhookSecrets; generatedDevFile: string | undefined }> {
  if (config.generatedDevFile === undefined) {
    return {
      secrets: {
        platform: config.platformSecrets ?? [],
        adyenHmacKeys: config.adyenHmacKeys ?? [],
        adyenBasicAuth: config.adyenBasicAuth,
        stripe: config.stripeSecrets ?? [],
        toleranceSeconds: config.toleranceSeconds,
        adyenEnvironment: config.adyenEnvironment,
        adyenEnvironmentConfigured: config.adyenEnvironmentConfigured,
      },
      generatedDevFile: undefined,
    };
  }
  const { content } = await readOrCreateSecretFile(config.generatedDevFile, () =>
    Promise.resolve(
      `${JSON.stringify(
        {
          WEBHOOK_PLATFORM_SECRETS: `whsec_${randomBytes(32).toString('base64')}`,
          WEBHOOK_ADYEN_HMAC_KEYS: randomBytes(32).toString('hex').toUpperCase(),
          WEBHOOK_STRIPE_SECRETS: `whsec_${randomBytes(24).toString('hex')}`,
        },
        null,
        2,
      )}\n`,
    ),
  );
  const dev = JSON.parse(content) as Record<string, string>;
  return {
    secrets: {
      platform: [dev['WEBHOOK_PLATFORM_SECRETS'] ?? ''],
      adyenHmacKeys: [dev['WEBHOOK_ADYEN_HMAC_KEYS'] ?? ''],
      adyenBasicAuth: config.adyenBasicAuth,
      stripe: [dev['WEBHOOK_STRIPE_SECRETS'] ?? ''],
      toleranceSeconds: config.toleranceSeconds,
      adyenEnvironment: config.adyenEnvironment,
      adyenEnvironmentConfigured: config.adyenEnvironmentConfigured,
    },
    generatedDevFile: config.generatedDevFile,
  };
}
