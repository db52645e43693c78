/**
 * The settings in force that weaken the production posture, listed once at start-up at warn level so
 * that an operator (and whoever reads the logs after an incident) sees every one of them in one place.
 * Each entry names its variable and says what it gives away. Nothing here refuses anything: the
 * refusals are in ./config.ts; these are the choices an operator may legitimately make, made visible.
 */
import type { Config } from './config.js';

export function productionDowngrades(config: Config): string[] {
  const found: string[] = [];
  const add = (when: boolean, text: string): void => {
    if (when) found.push(text);
  };
  add(
    config.tls.port !== undefined && config.tls.cardRoutesAuth !== 'mtls-required',
    `CARD_ROUTES_AUTH=${config.tls.cardRoutesAuth} with TLS_PORT: the card-data routes accept bearer tokens although this service could require client certificates`,
  );
  add(config.vault.detokeniseEnabled, 'DETOKENISE_ENABLED=true: card numbers can be revealed over the API');
  add(
    config.http.trustProxy,
    'TRUST_PROXY=true: client addresses (audit origin) are taken from X-Forwarded-For; only safe behind a proxy that overwrites it',
  );
  add(
    config.auth.keys.source === 'dev-issuer',
    'development token issuer trusted (no AUTH_JWKS_URL / AUTH_PUBLIC_KEYS): whoever reads DATA_DIR mints any scope',
  );
  add(
    config.auth.keys.source === 'jwks-url' && config.auth.keys.url.protocol === 'http:',
    'AUTH_JWKS_URL is http://: whoever can alter the path to it can substitute the keys and mint any token',
  );
  add(
    config.allowDevelopmentDefaults,
    'ALLOW_DEVELOPMENT_DEFAULTS=true: development conveniences allowed beside DATABASE_URL',
  );
  add(config.keys.singleOperator, 'KEYS_SINGLE_OPERATOR=true: keys rotate and retire without dual control');
  add(
    config.events.allowPrivateTargets,
    'EVENTS_ALLOW_PRIVATE_TARGETS=true: outbound webhooks may reach internal addresses',
  );
  add(config.events.allowHttpTargets, 'NODE_ENV=development: outbound webhooks may use http:// (unencrypted) targets');
  add(
    config.masterKey.source === 'generated-dev',
    'development master key generated into DATA_DIR (no MASTER_KEY / MASTER_KEY_FILE)',
  );
  add(
    config.masterKeyEnvAllowed,
    'MASTER_KEY_ENV_ALLOWED=true: a master key in the environment (MASTER_KEY / MASTER_KEY_PREVIOUS) is accepted',
  );
  add(config.webhooks.generatedDevFile !== undefined, 'development webhook secrets generated into DATA_DIR');
  add(config.auth.maxTokenAgeSeconds === undefined, 'JWT_MAX_TOKEN_AGE=0: bearer tokens of any lifetime are accepted');
  add(config.vault.cardRatePerSecond === 0, 'CARD_RATE_LIMIT_PER_SECOND=0: no per-client limit on the card endpoints');
  add(
    config.vault.firstSightingsPerMinute === 0,
    'CARD_FIRST_SIGHTINGS_PER_MINUTE=0: no per-client limit on new cards (membership probing runs at the card rate)',
  );
  return found;
}
