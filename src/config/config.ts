/* eslint max-lines: ["error", 940] -- every variable read (the four master-key sources and their previous keys included), typed and cross-checked in one pass with one error list; a split by section is left for later */
/**
 * Configuration, read once from the environment, validated, typed and frozen.
 *
 * Every problem is collected and reported together, each naming its variable, so an operator fixes a
 * deployment in one go. Secrets and key material have no defaults: the only exception is the embedded
 * development mode (no DATABASE_URL, NODE_ENV not production), where a development master key and a
 * development token signer are generated into DATA_DIR with a loud warning (see `src/keys`, `src/auth`).
 *
 * Development conveniences never reach a shared database by accident: once DATABASE_URL is set, the
 * development token issuer (anyone who can read DATA_DIR mints any scope), single-operator key
 * management, private and http:// event targets are refused unless ALLOW_DEVELOPMENT_DEFAULTS=true
 * says so explicitly (itself refused when NODE_ENV=production). NODE_ENV left unset reads as
 * development, so the database URL, not NODE_ENV, is what tells a real deployment from a laptop.
 * An http:// AUTH_JWKS_URL follows the same rule. A DATABASE_URL set but blank, or libpq's PG*
 * variables without it, stop start-up (a real database was meant). On the embedded database the
 * development issuer needs a loopback HOST unless the opt-in is set.
 * The settings that weaken a production posture are listed once at start-up (./downgrades.ts).
 */
import path from 'node:path';
import type { JSONWebKeySet } from 'jose';
import { parseLoyalty, type LoyaltyConfig } from './loyalty-config.js';
import type { DispatcherOptions } from './dispatcher-options.js';
import type { RetentionOptions } from './retention-options.js';
import { KEY_SPECS, type KeyPurpose } from '../crypto/key-specs.js';

export type NodeEnv = 'development' | 'test' | 'production';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export const ALLOWED_JWT_ALGORITHMS = ['ES256', 'ES384', 'EdDSA', 'RS256', 'PS256'] as const;
export type JwtAlgorithm = (typeof ALLOWED_JWT_ALGORITHMS)[number];
/**
 * How the card-data operations (those that accept a `clientCertificate` in openapi.yaml) authenticate:
 * `jwt` a bearer token (a presented certificate is ignored); `mtls-or-jwt` a client certificate when
 * one is presented, else a bearer token; `mtls-required` only a client certificate.
 */
export const CARD_ROUTES_AUTH_MODES = ['jwt', 'mtls-or-jwt', 'mtls-required'] as const;
export type CardRoutesAuth = (typeof CARD_ROUTES_AUTH_MODES)[number];

/**
 * Where a PKCS#11 token is and how to log in to it (PKCS11_MODULE, PKCS11_TOKEN_LABEL,
 * PKCS11_PIN_FILE). The PIN itself is never in the configuration: only the path of a file that holds
 * it (mode 0600), read when the source logs in, so that it is in no environment, argument or log.
 */
export interface Pkcs11Settings {
  readonly module: string;
  readonly tokenLabel: string;
  readonly pinFile: string;
  /** How long one token operation may take before the source counts the token as unavailable. */
  readonly timeoutMs: number;
}

/** MASTER_KEY_SOURCE: where the master key (KEK) lives. Unset: today's inference (see parseMasterKey). */
export const MASTER_KEY_SOURCES = ['env', 'file', 'pkcs11', 'shares'] as const;

export type MasterKeyConfig =
  | { readonly source: 'env'; readonly keyBase64: string }
  | { readonly source: 'file'; readonly file: string }
  | { readonly source: 'generated-dev'; readonly file: string }
  | { readonly source: 'pkcs11'; readonly pkcs11: Pkcs11Settings; readonly keyLabel: string }
  | SharesMasterKeyConfig;

/**
 * MASTER_KEY_SOURCE=shares: the master key exists only as M-of-N shares held by the custodians
 * (src/keys/master-key-sources/shares.ts). The service starts sealed; nothing here is secret.
 */
export interface SharesMasterKeyConfig {
  readonly source: 'shares';
  /**
   * MASTER_KEY_SHARES_KEY_ID: the id (`keys shares status` prints it) of the master key the shares
   * must rebuild. Pinned outside the database, so that a database writer who replaces the split
   * record, the custodians and every wrapped key with ones of their own making still cannot have the
   * service accept a master key of their choosing.
   */
  readonly keyId: string;
  /**
   * MASTER_KEY_SHARE_FILES (the key CLI only): paths of cleartext share files (`keys shares reveal`,
   * mode 0600) from which the CLI rebuilds the key for its own run. Paths, never shares: environment
   * variables and arguments are readable by other processes of the same user.
   */
  readonly shareFiles: readonly string[];
}

export type AuthKeysConfig =
  | { readonly source: 'jwks-url'; readonly url: URL }
  | { readonly source: 'static'; readonly jwks: JSONWebKeySet }
  | { readonly source: 'dev-issuer'; readonly file: string };

export interface Config {
  readonly nodeEnv: NodeEnv;
  readonly host: string;
  readonly port: number;
  readonly logLevel: LogLevel;
  readonly dataDir: string;
  readonly database: {
    /** `undefined` means the embedded PGlite default under `dataDir`. */
    readonly url: string | undefined;
    readonly poolMax: number;
    readonly statementTimeoutMs: number;
    readonly connectTimeoutMs: number;
  };
  readonly masterKey: MasterKeyConfig;
  /** Previous master keys, for unwrapping only, while `keys rotate --purpose master` runs. */
  readonly masterKeyPrevious: readonly string[];
  /**
   * Previous master keys held elsewhere than in MASTER_KEY_PREVIOUS, for unwrapping only during a
   * rotation across sources: MASTER_KEY_PREVIOUS_FILE (a file source) and PKCS11_PREVIOUS_KEY_LABEL
   * (a key in the configured token).
   */
  readonly masterKeyPreviousSources: readonly MasterKeyConfig[];
  /** The token settings, whenever PKCS11_MODULE is set (the current source, a previous one, `keys hsm init`). */
  readonly pkcs11: Pkcs11Settings | undefined;
  /** MASTER_KEY_ENV_ALLOWED: the env source (and MASTER_KEY_PREVIOUS) accepted when NODE_ENV=production. */
  readonly masterKeyEnvAllowed: boolean;
  readonly auth: {
    readonly issuer: string;
    readonly audience: string;
    readonly keys: AuthKeysConfig;
    readonly algorithms: readonly JwtAlgorithm[];
    readonly clockToleranceSeconds: number;
    /** Longest lifetime (`exp - iat`) accepted; `undefined` (JWT_MAX_TOKEN_AGE=0): no limit, `iat` optional. */
    readonly maxTokenAgeSeconds: number | undefined;
  };
  /**
   * ALLOW_DEVELOPMENT_DEFAULTS: the development issuer, single-operator keys and private/http event
   * targets are allowed beside DATABASE_URL (a developer's PostgreSQL). Never in production.
   */
  readonly allowDevelopmentDefaults: boolean;
  readonly vault: {
    /** Detokenisation is off unless explicitly enabled (PCI DSS: reveal PANs only where needed). */
    readonly detokeniseEnabled: boolean;
    readonly detokenisePerMinute: number;
    /** How often each instance checks whether another process changed the key ring. */
    readonly keyRingRefreshMs: number;
    /** Per client and instance, on tokenise / read / attach: sustained rate (0: off) and burst. */
    readonly cardRatePerSecond: number;
    readonly cardRateBurst: number;
    /**
     * Per client and instance: new cards created by tokenise / attach per minute (0: off) and burst.
     * Lower than the card rate: each new card answers a membership probe "unknown" (201 vs 200).
     */
    readonly firstSightingsPerMinute: number;
    readonly firstSightingsBurst: number;
    /** Card lookups in flight at once; more share the next statement. */
    readonly lookupConcurrency: number;
    readonly createConcurrency: number;
    /** PCI DSS 3.2.1: PAN ciphertext kept this long after a card's last use (docs/data-protection.md). */
    readonly retention: RetentionOptions;
  };
  readonly webhooks: WebhooksConfig;
  readonly keys: {
    /**
     * DEVELOPMENT ONLY: rotate, retire and destroy run without two custodian approvals. Refused
     * when NODE_ENV=production (PCI DSS 3.6.1.2 / 3.7.6: dual control).
     */
    readonly singleOperator: boolean;
    /** Cryptoperiod per purpose, in days (defaults and reasons: KEY_SPECS in src/crypto/key-specs.ts). */
    readonly cryptoperiodDays: Readonly<Record<KeyPurpose, number>>;
  };
  readonly payments: {
    /** Channels whose authorisation is also the capture (POS terminals auto-capture). */
    readonly autoCaptureChannels: readonly string[];
    /** Group commit: most deliveries sharing one transaction (1: one transaction each). */
    readonly batchMax: number;
    /** Group commit: transactions in flight at once, each on its own connection. */
    readonly batchConcurrency: number;
  };
  readonly loyalty: LoyaltyConfig;
  /** Returns at a till: how many days back, and lookups plus returns per client per minute (shared). */
  readonly returns: { readonly windowDays: number; readonly perMinute: number };
  readonly tls: TlsConfig;
  /** The dispatcher's own settings (documented on DispatcherOptions), and where it may deliver. */
  readonly events: DispatcherOptions & {
    /** The in-process outbox dispatcher (off: events are still written, another instance delivers). */
    readonly dispatcherEnabled: boolean;
    /** DEVELOPMENT ONLY: loopback / private targets (a receiver on localhost). Refused in production. */
    readonly allowPrivateTargets: boolean;
    /** http:// targets: only when NODE_ENV=development. */
    readonly allowHttpTargets: boolean;
  };
  readonly http: {
    readonly bodyLimitBytes: number;
    readonly shutdownTimeoutMs: number;
    readonly trustProxy: boolean;
    /** Worker processes sharing the port (node:cluster); 1: the service runs in this process. */
    readonly workers: number;
  };
}

/**
 * Webhook secrets, each a list so that several are live during a rotation. `undefined` lists mean the
 * provider is not configured: its endpoint refuses every delivery. On the embedded development
 * default (no lists set anywhere) development secrets are generated into DATA_DIR instead.
 */
export interface WebhooksConfig {
  readonly platformSecrets: readonly string[] | undefined;
  readonly adyenHmacKeys: readonly string[] | undefined;
  readonly adyenBasicAuth: { readonly username: string; readonly password: string } | undefined;
  readonly stripeSecrets: readonly string[] | undefined;
  readonly toleranceSeconds: number;
  /** Adyen's environment (`live` flag of each notification must match): WEBHOOK_ADYEN_ENVIRONMENT. */
  readonly adyenEnvironment: AdyenEnvironment;
  /** WEBHOOK_ADYEN_ENVIRONMENT was set: a notification without its `live` flag is then refused too. */
  readonly adyenEnvironmentConfigured: boolean;
  /** Set on the embedded development default when no secret is configured. */
  readonly generatedDevFile: string | undefined;
}

/** The optional HTTPS listener with client certificates (mutual TLS), beside the HTTP one. */
export interface TlsConfig {
  /** `undefined`: no HTTPS listener. */
  readonly port: number | undefined;
  readonly certFile: string | undefined;
  readonly keyFile: string | undefined;
  /** Extra client CA certificates (PEM bundle) trusted beside the built-in `mtls-client-ca`. */
  readonly clientCaFile: string | undefined;
  readonly cardRoutesAuth: CardRoutesAuth;
  /** How often each instance checks for revocations (and CA rotations); 0: on every request. */
  readonly revocationCheckMs: number;
}

export type Env = Readonly<Record<string, string | undefined>>;

export interface LoadConfigOptions {
  /**
   * Whether this process verifies bearer tokens (the service, default) or never does (the keys,
   * migrate and loyalty CLIs): only the former needs an identity provider beside DATABASE_URL.
   */
  readonly verifiesTokens?: boolean;
}

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Development-only defaults: not secrets, just names that the development token signer also uses. */
export const DEV_AUTH_ISSUER = 'urn:loyalty-vault:development-issuer';
export const DEV_AUTH_AUDIENCE = 'loyalty-vault';
export const DEV_MASTER_KEY_FILE = 'dev-master-key.b64';
export const DEV_AUTH_KEY_FILE = 'dev-auth-signing-key.json';
export const DEV_WEBHOOK_SECRETS_FILE = 'dev-webhook-secrets.json';

class Reader {
  readonly problems: string[] = [];
  constructor(private readonly env: Env) {}

  /** True when the variable is present at all, even blank. */
  isSet(name: string): boolean {
    return this.env[name] !== undefined;
  }

  raw(name: string): string | undefined {
    const value = this.env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  }

  oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if ((allowed as readonly string[]).includes(value)) return value as T;
    this.problems.push(`${name} must be one of ${allowed.join(', ')}`);
    return fallback;
  }

  integer(name: string, fallback: number, min: number, max: number): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      this.problems.push(`${name} must be a whole number from ${min} to ${max}`);
      return fallback;
    }
    return Number(value);
  }

  boolean(name: string, fallback: boolean): boolean {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (value === 'true' || value === '1') return true;
    if (value === 'false' || value === '0') return false;
    this.problems.push(`${name} must be true or false`);
    return fallback;
  }

  problem(message: string): void {
    this.problems.push(message);
  }
}

export function loadConfig(env: Env = process.env, options: LoadConfigOptions = {}): Config {
  const r = new Reader(env);
  const nodeEnv = r.oneOf<NodeEnv>('NODE_ENV', ['development', 'test', 'production'], 'development');
  const production = nodeEnv === 'production';
  const dataDir = path.resolve(r.raw('DATA_DIR') ?? './data');

  const databaseUrl = parseDatabaseUrl(r);
  const embedded = databaseUrl === undefined;
  if (production && embedded) {
    r.problem('DATABASE_URL is required when NODE_ENV=production (the embedded database is for development)');
  }
  const allowDevelopmentDefaults = r.boolean('ALLOW_DEVELOPMENT_DEFAULTS', false);
  if (allowDevelopmentDefaults && production) {
    r.problem('ALLOW_DEVELOPMENT_DEFAULTS is refused when NODE_ENV=production');
  }
  /** Development conveniences: on the embedded database, or beside DATABASE_URL only when asked for. */
  const development = { production, shared: !embedded && !allowDevelopmentDefaults };

  const config: Config = {
    nodeEnv,
    host: r.raw('HOST') ?? '127.0.0.1',
    port: r.integer('PORT', 8080, 0, 65535),
    logLevel: r.oneOf<LogLevel>('LOG_LEVEL', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], 'info'),
    dataDir,
    database: {
      url: databaseUrl,
      poolMax: r.integer('DB_POOL_MAX', 10, 1, 200),
      statementTimeoutMs: r.integer('DB_STATEMENT_TIMEOUT_MS', 5000, 100, 600_000),
      connectTimeoutMs: r.integer('DB_CONNECT_TIMEOUT_MS', 5000, 100, 120_000),
    },
    ...parseMasterKeys(r, { production, embedded, dataDir }),
    auth: parseAuth(r, {
      production,
      dataDir,
      refuseDevIssuer: development.shared && options.verifiesTokens !== false,
      httpJwksAllowed: !production && !development.shared,
    }),
    allowDevelopmentDefaults,
    vault: {
      detokeniseEnabled: r.boolean('DETOKENISE_ENABLED', false),
      detokenisePerMinute: r.integer('DETOKENISE_RATE_LIMIT_PER_MINUTE', 10, 1, 10_000),
      keyRingRefreshMs: r.integer('KEY_RING_REFRESH_MS', 5_000, 100, 300_000),
      cardRatePerSecond: r.integer('CARD_RATE_LIMIT_PER_SECOND', 200, 0, 1_000_000),
      // Sized for a gateway client carrying one merchant's peak (README: "Membership probing and the card limits").
      cardRateBurst: r.integer('CARD_RATE_LIMIT_BURST', 400, 1, 1_000_000),
      firstSightingsPerMinute: r.integer('CARD_FIRST_SIGHTINGS_PER_MINUTE', 1_800, 0, 60_000_000),
      firstSightingsBurst: r.integer('CARD_FIRST_SIGHTINGS_BURST', 300, 1, 1_000_000),
      lookupConcurrency: r.integer('CARD_LOOKUP_CONCURRENCY', 4, 1, 64),
      createConcurrency: r.integer('CARD_CREATE_CONCURRENCY', 4, 1, 64),
      retention: parseRetention(r),
    },
    webhooks: parseWebhooks(r, { production, embedded, dataDir }),
    keys: {
      singleOperator: r.boolean('KEYS_SINGLE_OPERATOR', false),
      cryptoperiodDays: {
        'pan-encryption': r.integer(
          'CRYPTOPERIOD_DAYS_PAN_ENCRYPTION',
          KEY_SPECS['pan-encryption'].cryptoperiodDays,
          1,
          3650,
        ),
        'identifier-mac': r.integer(
          'CRYPTOPERIOD_DAYS_IDENTIFIER_MAC',
          KEY_SPECS['identifier-mac'].cryptoperiodDays,
          1,
          3650,
        ),
        'audit-signing': r.integer(
          'CRYPTOPERIOD_DAYS_AUDIT_SIGNING',
          KEY_SPECS['audit-signing'].cryptoperiodDays,
          1,
          3650,
        ),
        'mtls-client-ca': r.integer(
          'CRYPTOPERIOD_DAYS_MTLS_CLIENT_CA',
          KEY_SPECS['mtls-client-ca'].cryptoperiodDays,
          1,
          3650,
        ),
        'subscription-secret': r.integer(
          'CRYPTOPERIOD_DAYS_SUBSCRIPTION_SECRET',
          KEY_SPECS['subscription-secret'].cryptoperiodDays,
          1,
          3650,
        ),
      },
    },
    payments: {
      autoCaptureChannels: parseList(r, 'PAYMENT_AUTO_CAPTURE_CHANNELS', /^(online|in_store|mobile|call_centre)$/, {
        message:
          'PAYMENT_AUTO_CAPTURE_CHANNELS must be a comma-separated list of online, in_store, mobile, call_centre',
      }) ?? ['in_store'],
      batchMax: r.integer('PAYMENT_BATCH_MAX', 32, 1, 1000),
      batchConcurrency: r.integer('PAYMENT_BATCH_CONCURRENCY', 1, 1, 64),
    },
    loyalty: parseLoyalty(r),
    returns: {
      windowDays: r.integer('RETURN_WINDOW_DAYS', 30, 1, 730),
      perMinute: r.integer('RETURNS_RATE_LIMIT_PER_MINUTE', 30, 1, 10_000),
    },
    tls: parseTls(r, production),
    events: {
      dispatcherEnabled: r.boolean('EVENTS_DISPATCHER_ENABLED', true),
      pollIntervalMs: r.integer('EVENTS_POLL_INTERVAL_MS', 1_000, 10, 600_000),
      batchSize: r.integer('EVENTS_BATCH_SIZE', 20, 1, 500),
      maxAttempts: r.integer('EVENTS_MAX_ATTEMPTS', 15, 1, 100),
      backoffBaseMs: r.integer('EVENTS_BACKOFF_BASE_MS', 2_000, 1, 3_600_000),
      backoffMaxMs: r.integer('EVENTS_BACKOFF_MAX_MS', 3_600_000, 1, 86_400_000),
      retryAfterMaxMs: r.integer('EVENTS_RETRY_AFTER_MAX_MS', 3_600_000, 0, 86_400_000),
      timeoutMs: r.integer('EVENTS_TIMEOUT_MS', 10_000, 100, 120_000),
      maxResponseBytes: r.integer('EVENTS_MAX_RESPONSE_BYTES', 64 * 1024, 0, 10 * 1024 * 1024),
      allowPrivateTargets: r.boolean('EVENTS_ALLOW_PRIVATE_TARGETS', false),
      allowHttpTargets: nodeEnv === 'development' && !development.shared,
    },
    http: {
      bodyLimitBytes: r.integer('BODY_LIMIT_BYTES', 64 * 1024, 1024, 10 * 1024 * 1024),
      shutdownTimeoutMs: r.integer('SHUTDOWN_TIMEOUT_MS', 10_000, 0, 600_000),
      trustProxy: r.boolean('TRUST_PROXY', false),
      workers: r.integer('WORKERS', 1, 1, 64),
    },
  };
  if (config.keys.singleOperator && production) {
    r.problem(
      'KEYS_SINGLE_OPERATOR is for development only: key management needs dual control when NODE_ENV=production',
    );
  }
  if (config.events.allowPrivateTargets && production) {
    r.problem('EVENTS_ALLOW_PRIVATE_TARGETS is for development only: it lets webhooks reach internal addresses (SSRF)');
  }
  if (config.keys.singleOperator && development.shared) {
    r.problem(
      `KEYS_SINGLE_OPERATOR is for development only: refused when DATABASE_URL is set unless ${OPT_IN} (dual control)`,
    );
  }
  if (config.events.allowPrivateTargets && development.shared) {
    r.problem(
      `EVENTS_ALLOW_PRIVATE_TARGETS is for development only: refused when DATABASE_URL is set unless ${OPT_IN} (SSRF)`,
    );
  }
  if (
    config.auth.keys.source === 'dev-issuer' &&
    !production &&
    !allowDevelopmentDefaults &&
    options.verifiesTokens !== false &&
    !isLoopback(config.host)
  ) {
    r.problem(
      `HOST=${config.host} listens beyond this machine while the development token issuer is trusted (whoever ` +
        `reads DATA_DIR mints any scope): set AUTH_JWKS_URL or AUTH_PUBLIC_KEYS, listen on 127.0.0.1, or set ${OPT_IN}`,
    );
  }
  if (config.http.workers > 1 && embedded) {
    r.problem('WORKERS above 1 needs DATABASE_URL (the embedded database belongs to one process)');
  }

  if (r.problems.length > 0) throw new ConfigError(r.problems);
  return deepFreeze(config);
}

function parseTls(r: Reader, production: boolean): TlsConfig {
  const portText = r.raw('TLS_PORT');
  const port = portText === undefined ? undefined : r.integer('TLS_PORT', 8443, 0, 65535);
  const certFile = r.raw('TLS_CERT_FILE');
  const keyFile = r.raw('TLS_KEY_FILE');
  const clientCaFile = r.raw('TLS_CLIENT_CA');
  if (port !== undefined && (certFile === undefined || keyFile === undefined)) {
    r.problem('TLS_PORT needs TLS_CERT_FILE and TLS_KEY_FILE (the server certificate and its key, PEM)');
  }
  if (port === undefined && (certFile !== undefined || keyFile !== undefined || clientCaFile !== undefined)) {
    r.problem('TLS_CERT_FILE, TLS_KEY_FILE and TLS_CLIENT_CA need TLS_PORT (the HTTPS listener)');
  }
  // Production defaults to certificates on the card-data routes whenever the service terminates TLS
  // itself; behind a TLS-terminating proxy (no TLS_PORT) it cannot see certificates: bearer tokens.
  const fallback: CardRoutesAuth = production && port !== undefined ? 'mtls-required' : 'jwt';
  const cardRoutesAuth = r.oneOf<CardRoutesAuth>('CARD_ROUTES_AUTH', CARD_ROUTES_AUTH_MODES, fallback);
  if (cardRoutesAuth !== 'jwt' && port === undefined) {
    r.problem(
      `CARD_ROUTES_AUTH=${cardRoutesAuth} needs the HTTPS listener: set TLS_PORT, TLS_CERT_FILE and TLS_KEY_FILE`,
    );
  }
  return {
    port,
    certFile: certFile === undefined ? undefined : path.resolve(certFile),
    keyFile: keyFile === undefined ? undefined : path.resolve(keyFile),
    clientCaFile: clientCaFile === undefined ? undefined : path.resolve(clientCaFile),
    cardRoutesAuth,
    revocationCheckMs: r.integer('MTLS_REVOCATION_CHECK_MS', 1_000, 0, 60_000),
  };
}

/** 127.0.0.0/8, ::1 and localhost: reachable from this machine only. */
function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  return bare === 'localhost' || bare === '::1' || /^127(\.\d{1,3}){3}$/.test(bare);
}

/** libpq's connection variables: set without DATABASE_URL they say a PostgreSQL was meant. */
const LIBPQ_VARIABLES = ['PGHOST', 'PGHOSTADDR', 'PGPORT', 'PGUSER', 'PGPASSWORD', 'PGDATABASE'] as const;

/**
 * DATABASE_URL, or undefined for the embedded database. A DATABASE_URL that is set but blank, or
 * libpq's PG* variables set without it, are refused: both mean "a real database" to whoever set them,
 * and silently falling back to the embedded store would also bring its development defaults.
 */
function parseDatabaseUrl(r: Reader): string | undefined {
  const value = r.raw('DATABASE_URL');
  if (value === undefined) {
    if (r.isSet('DATABASE_URL')) {
      r.problem('DATABASE_URL is set but blank: unset it to use the embedded database, or give a postgres:// URL');
    }
    const libpq = LIBPQ_VARIABLES.filter((name) => r.raw(name) !== undefined);
    if (libpq.length > 0) {
      r.problem(
        `${libpq.join(', ')} ${libpq.length === 1 ? 'is' : 'are'} set but DATABASE_URL is not: this service ` +
          'connects only through DATABASE_URL (postgres://…); set it, or unset those to use the embedded database',
      );
    }
    return undefined;
  }
  try {
    const url = new URL(value);
    if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') throw new Error('protocol');
    return value;
  } catch {
    // The URL can hold a password: never repeat it.
    r.problem('DATABASE_URL must be a postgres:// or postgresql:// URL');
    return undefined;
  }
}

const BASE64_256_BIT = /^[A-Za-z0-9+/]{43}=$/;

function parseMasterKeys(
  r: Reader,
  ctx: { production: boolean; embedded: boolean; dataDir: string },
): Pick<Config, 'masterKey' | 'masterKeyPrevious' | 'masterKeyPreviousSources' | 'pkcs11' | 'masterKeyEnvAllowed'> {
  const pkcs11 = parsePkcs11(r);
  const masterKeyEnvAllowed = r.boolean('MASTER_KEY_ENV_ALLOWED', false);
  const masterKey = parseMasterKey(r, { ...ctx, pkcs11 });
  const masterKeyPrevious =
    parseList(r, 'MASTER_KEY_PREVIOUS', BASE64_256_BIT, {
      message: 'MASTER_KEY_PREVIOUS must be a comma-separated list of 32-byte (256-bit) base64 keys',
    }) ?? [];
  // Threat: whoever reads the process environment (a crash dump, /proc/<pid>/environ, a CI log, an
  // orchestrator's pod spec) holds a key that opens every data key. In production that is refused
  // unless an operator says so explicitly; the setting is then listed among the downgrades.
  if (ctx.production && !masterKeyEnvAllowed) {
    if (masterKey.source === 'env') {
      r.problem(
        'MASTER_KEY (the env master key source) is refused when NODE_ENV=production: use MASTER_KEY_SOURCE=pkcs11 ' +
          'or a file, or set MASTER_KEY_ENV_ALLOWED=true to accept a key in the environment',
      );
    }
    if (masterKeyPrevious.length > 0) {
      r.problem('MASTER_KEY_PREVIOUS is refused when NODE_ENV=production unless MASTER_KEY_ENV_ALLOWED=true');
    }
  }
  const masterKeyPreviousSources: MasterKeyConfig[] = [];
  const previousFile = r.raw('MASTER_KEY_PREVIOUS_FILE');
  if (previousFile !== undefined) masterKeyPreviousSources.push({ source: 'file', file: path.resolve(previousFile) });
  const previousLabel = r.raw('PKCS11_PREVIOUS_KEY_LABEL');
  if (previousLabel !== undefined) {
    if (pkcs11 === undefined)
      r.problem('PKCS11_PREVIOUS_KEY_LABEL needs PKCS11_MODULE, PKCS11_TOKEN_LABEL and PKCS11_PIN_FILE');
    else if (masterKey.source === 'pkcs11' && masterKey.keyLabel === previousLabel) {
      r.problem('PKCS11_PREVIOUS_KEY_LABEL must name another key than PKCS11_KEY_LABEL');
    } else masterKeyPreviousSources.push({ source: 'pkcs11', pkcs11, keyLabel: previousLabel });
  }
  const previousShares = parsePreviousShares(r, masterKey);
  if (previousShares !== undefined) masterKeyPreviousSources.push(previousShares);
  return { masterKey, masterKeyPrevious, masterKeyPreviousSources, pkcs11, masterKeyEnvAllowed };
}

/**
 * MASTER_KEY_PREVIOUS_SOURCE=shares: the key CLI rotating out of the shares source (shares → env, file,
 * PKCS#11, or shares of a new key) holds the previous key rebuilt from M cleartext share files
 * (MASTER_KEY_PREVIOUS_SHARE_FILES, `keys shares reveal`) and pinned by MASTER_KEY_PREVIOUS_SHARES_KEY_ID,
 * for the run of `keys rotate --purpose master` only. The service refuses it (src/service.ts), as it
 * refuses MASTER_KEY_SHARE_FILES. The other previous sources have their own variables.
 */
function parsePreviousShares(r: Reader, current: MasterKeyConfig): SharesMasterKeyConfig | undefined {
  const chosen = r.raw('MASTER_KEY_PREVIOUS_SOURCE');
  const keyId = r.raw('MASTER_KEY_PREVIOUS_SHARES_KEY_ID');
  const files = pathList(r.raw('MASTER_KEY_PREVIOUS_SHARE_FILES'));
  if (chosen === undefined) {
    if (keyId !== undefined || files.length > 0) {
      r.problem(
        'MASTER_KEY_PREVIOUS_SHARES_KEY_ID and MASTER_KEY_PREVIOUS_SHARE_FILES need MASTER_KEY_PREVIOUS_SOURCE=shares',
      );
    }
    return undefined;
  }
  if (chosen !== 'shares') {
    r.problem(
      'MASTER_KEY_PREVIOUS_SOURCE must be shares (a previous env, file or PKCS#11 key is named by MASTER_KEY_PREVIOUS, MASTER_KEY_PREVIOUS_FILE or PKCS11_PREVIOUS_KEY_LABEL)',
    );
    return undefined;
  }
  if (keyId === undefined || !SHARES_KEY_ID.test(keyId)) {
    r.problem(
      "MASTER_KEY_PREVIOUS_SOURCE=shares needs MASTER_KEY_PREVIOUS_SHARES_KEY_ID: the previous split's master key id (local:…)",
    );
  } else if (current.source === 'shares' && current.keyId === keyId) {
    r.problem('MASTER_KEY_PREVIOUS_SHARES_KEY_ID must name another key than MASTER_KEY_SHARES_KEY_ID');
  }
  if (files.length < 2) {
    r.problem(
      'MASTER_KEY_PREVIOUS_SOURCE=shares needs MASTER_KEY_PREVIOUS_SHARE_FILES: the paths of M cleartext share files of the previous split (keys shares reveal)',
    );
  }
  return { source: 'shares', keyId: keyId ?? '', shareFiles: files };
}

const SHARES_KEY_ID = /^local:[A-Za-z0-9_-]{16}$/;

function pathList(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((f) => f.trim())
    .filter((f) => f !== '')
    .map((f) => path.resolve(f));
}

/**
 * The token settings: all three of PKCS11_MODULE, PKCS11_TOKEN_LABEL and PKCS11_PIN_FILE, or none.
 * There is deliberately no PKCS11_PIN: a PIN in the environment is readable wherever the environment
 * is (and `ps e`, crash reports, orchestrator specs), the very exposure the token is there to end.
 */
function parsePkcs11(r: Reader): Pkcs11Settings | undefined {
  if (r.isSet('PKCS11_PIN')) {
    r.problem('PKCS11_PIN is not accepted: put the PIN in a file readable only by the service (PKCS11_PIN_FILE)');
  }
  const module = r.raw('PKCS11_MODULE');
  const tokenLabel = r.raw('PKCS11_TOKEN_LABEL');
  const pinFile = r.raw('PKCS11_PIN_FILE');
  const timeoutMs = r.integer('PKCS11_TIMEOUT_MS', 5_000, 100, 120_000);
  if (module === undefined && tokenLabel === undefined && pinFile === undefined) return undefined;
  if (module === undefined || tokenLabel === undefined || pinFile === undefined) {
    r.problem('PKCS11_MODULE, PKCS11_TOKEN_LABEL and PKCS11_PIN_FILE must be set together');
    return undefined;
  }
  if (!path.isAbsolute(module)) r.problem('PKCS11_MODULE must be an absolute path to the PKCS#11 library');
  return { module, tokenLabel, pinFile: path.resolve(pinFile), timeoutMs };
}

/**
 * MASTER_KEY_SOURCE selects the source explicitly. Unset, the choice is today's: MASTER_KEY → env,
 * MASTER_KEY_FILE → file, nothing on the embedded development default → a generated development key
 * (`npm start` on a fresh machine). A token is only ever used when asked for by name.
 */
function parseMasterKey(
  r: Reader,
  ctx: { production: boolean; embedded: boolean; dataDir: string; pkcs11: Pkcs11Settings | undefined },
): MasterKeyConfig {
  const inline = r.raw('MASTER_KEY');
  const file = r.raw('MASTER_KEY_FILE');
  if (inline !== undefined && file !== undefined) {
    r.problem('MASTER_KEY and MASTER_KEY_FILE are mutually exclusive: set one');
  }
  const chosen = r.raw('MASTER_KEY_SOURCE');
  if (chosen !== undefined && !(MASTER_KEY_SOURCES as readonly string[]).includes(chosen)) {
    r.problem(`MASTER_KEY_SOURCE must be one of ${MASTER_KEY_SOURCES.join(', ')}`);
  }
  const source = chosen ?? (inline !== undefined ? 'env' : file !== undefined ? 'file' : undefined);
  const placeholder: MasterKeyConfig = { source: 'generated-dev', file: path.join(ctx.dataDir, DEV_MASTER_KEY_FILE) };
  // A key in another place than the chosen source is a second copy of a secret nobody uses: refused.
  const refuseOthers = (allowed: 'MASTER_KEY' | 'MASTER_KEY_FILE' | undefined) => {
    for (const name of ['MASTER_KEY', 'MASTER_KEY_FILE'] as const) {
      if (name !== allowed && r.raw(name) !== undefined) {
        r.problem(
          `${name} is set but MASTER_KEY_SOURCE=${source ?? ''}: remove it (a previous key goes in MASTER_KEY_PREVIOUS / MASTER_KEY_PREVIOUS_FILE)`,
        );
      }
    }
  };
  switch (source) {
    case 'env':
      refuseOthers('MASTER_KEY');
      if (inline === undefined) {
        r.problem('MASTER_KEY is required when MASTER_KEY_SOURCE=env');
        return placeholder;
      }
      // Never echo the value, even when it is wrong.
      if (!BASE64_256_BIT.test(inline)) r.problem('MASTER_KEY must be 32 bytes (256 bits) encoded as base64');
      return { source: 'env', keyBase64: inline };
    case 'file':
      refuseOthers('MASTER_KEY_FILE');
      if (file === undefined) {
        r.problem('MASTER_KEY_FILE is required when MASTER_KEY_SOURCE=file');
        return placeholder;
      }
      return { source: 'file', file: path.resolve(file) };
    case 'shares':
      return parseSharesSource(r);
    case 'pkcs11': {
      refuseOthers(undefined);
      const keyLabel = r.raw('PKCS11_KEY_LABEL');
      if (ctx.pkcs11 === undefined || keyLabel === undefined) {
        r.problem(
          'MASTER_KEY_SOURCE=pkcs11 needs PKCS11_MODULE, PKCS11_TOKEN_LABEL, PKCS11_KEY_LABEL and PKCS11_PIN_FILE',
        );
        return placeholder;
      }
      return { source: 'pkcs11', pkcs11: ctx.pkcs11, keyLabel };
    }
    default:
      if (ctx.production || !ctx.embedded) {
        r.problem(
          'MASTER_KEY or MASTER_KEY_FILE is required' +
            (ctx.production ? ' when NODE_ENV=production' : ' when DATABASE_URL is set') +
            ` (or MASTER_KEY_SOURCE, one of ${MASTER_KEY_SOURCES.join(', ')})`,
        );
      }
      return placeholder;
  }
}

function parseSharesSource(r: Reader): SharesMasterKeyConfig {
  for (const name of ['MASTER_KEY', 'MASTER_KEY_FILE', 'MASTER_KEY_PREVIOUS']) {
    if (r.raw(name) !== undefined)
      r.problem(`${name} must not be set when MASTER_KEY_SOURCE=shares (the key exists only as shares)`);
  }
  const keyId = r.raw('MASTER_KEY_SHARES_KEY_ID');
  if (keyId === undefined || !SHARES_KEY_ID.test(keyId)) {
    r.problem(
      'MASTER_KEY_SHARES_KEY_ID is required when MASTER_KEY_SOURCE=shares: the master key id `keys shares status` prints (local:…)',
    );
  }
  return { source: 'shares', keyId: keyId ?? '', shareFiles: pathList(r.raw('MASTER_KEY_SHARE_FILES')) };
}

const OPT_IN = 'ALLOW_DEVELOPMENT_DEFAULTS=true';

function parseAuth(
  r: Reader,
  ctx: { production: boolean; dataDir: string; refuseDevIssuer: boolean; httpJwksAllowed: boolean },
): Config['auth'] {
  const jwksUrl = r.raw('AUTH_JWKS_URL');
  const publicKeys = r.raw('AUTH_PUBLIC_KEYS');
  let keys: AuthKeysConfig = { source: 'dev-issuer', file: path.join(ctx.dataDir, DEV_AUTH_KEY_FILE) };
  if (jwksUrl !== undefined && publicKeys !== undefined) {
    r.problem('AUTH_JWKS_URL and AUTH_PUBLIC_KEYS are mutually exclusive: set one');
  } else if (jwksUrl !== undefined) {
    keys = parseJwksUrl(r, jwksUrl, ctx.httpJwksAllowed);
  } else if (publicKeys !== undefined) {
    keys = parseStaticJwks(r, publicKeys);
  } else if (ctx.production) {
    r.problem('AUTH_JWKS_URL or AUTH_PUBLIC_KEYS is required when NODE_ENV=production');
  } else if (ctx.refuseDevIssuer) {
    r.problem(
      'AUTH_JWKS_URL or AUTH_PUBLIC_KEYS is required when DATABASE_URL is set: the development token issuer ' +
        `trusts a key file in DATA_DIR (whoever reads it mints any scope). Set ${OPT_IN} to use it on a development database`,
    );
  }

  const issuer = r.raw('AUTH_ISSUER');
  const audience = r.raw('AUTH_AUDIENCE');
  const devIssuer = keys.source === 'dev-issuer';
  if (issuer === undefined && !devIssuer) r.problem('AUTH_ISSUER is required with AUTH_JWKS_URL or AUTH_PUBLIC_KEYS');
  if (audience === undefined && !devIssuer) {
    r.problem('AUTH_AUDIENCE is required with AUTH_JWKS_URL or AUTH_PUBLIC_KEYS');
  }

  return {
    issuer: issuer ?? DEV_AUTH_ISSUER,
    audience: audience ?? DEV_AUTH_AUDIENCE,
    keys,
    algorithms: parseAlgorithms(r),
    clockToleranceSeconds: r.integer('AUTH_CLOCK_TOLERANCE_SECONDS', 30, 0, 300),
    maxTokenAgeSeconds: parseMaxTokenAge(r),
  };
}

const DURATION = /^(\d+)(s|m|h|d)?$/;
const DURATION_UNIT_SECONDS = { s: 1, m: 60, h: 3_600, d: 86_400 } as const;

function parseRetention(r: Reader): RetentionOptions {
  const days = r.integer('CARD_RETENTION_DAYS', 0, 0, 36_500);
  const intervalMs = r.integer('CARD_RETENTION_INTERVAL_MS', 3_600_000, 0, 7 * 86_400_000);
  return { days, keepFingerprints: r.boolean('CARD_RETENTION_KEEP_FINGERPRINTS', true), intervalMs };
}

/** JWT_MAX_TOKEN_AGE: seconds, or a number with s/m/h/d; 0 turns the lifetime check off. Default 24 h. */
function parseMaxTokenAge(r: Reader): number | undefined {
  const value = r.raw('JWT_MAX_TOKEN_AGE');
  if (value === undefined) return 86_400;
  const match = DURATION.exec(value);
  const seconds = match === null ? NaN : Number(match[1]) * DURATION_UNIT_SECONDS[(match[2] ?? 's') as 's'];
  if (!Number.isSafeInteger(seconds) || seconds > 366 * 86_400) {
    r.problem('JWT_MAX_TOKEN_AGE must be a duration such as 3600, 90m, 24h or 7d (at most 366d; 0 turns it off)');
    return 86_400;
  }
  return seconds === 0 ? undefined : seconds;
}

/**
 * http:// only where development defaults are in effect (the embedded database, or
 * ALLOW_DEVELOPMENT_DEFAULTS): whoever can tamper with the path to an http:// JWKS mints any token.
 */
function parseJwksUrl(r: Reader, value: string, httpAllowed: boolean): AuthKeysConfig {
  try {
    const url = new URL(value);
    if (url.protocol !== 'https:' && (!httpAllowed || url.protocol !== 'http:')) {
      r.problem(
        'AUTH_JWKS_URL must be an https:// URL (http:// is accepted only on the embedded database or with ' +
          `${OPT_IN}, never when NODE_ENV=production)`,
      );
    }
    return { source: 'jwks-url', url };
  } catch {
    r.problem('AUTH_JWKS_URL must be a URL');
    return { source: 'jwks-url', url: new URL('https://invalid.invalid/') };
  }
}

function parseStaticJwks(r: Reader, value: string): AuthKeysConfig {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    r.problem('AUTH_PUBLIC_KEYS must be a JWKS JSON document ({"keys":[...]})');
    return { source: 'static', jwks: { keys: [] } };
  }
  const keys: unknown = (parsed as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || keys.length === 0 || !keys.every((k) => typeof k === 'object' && k !== null)) {
    r.problem('AUTH_PUBLIC_KEYS must be a JWKS JSON document with at least one key');
    return { source: 'static', jwks: { keys: [] } };
  }
  // A private key here means a signing secret leaked into the verifier's configuration.
  if (keys.some((k: Record<string, unknown>) => 'd' in k || k['kty'] === 'oct')) {
    r.problem('AUTH_PUBLIC_KEYS must hold public asymmetric keys only (no "d", no "oct" keys)');
  }
  return { source: 'static', jwks: { keys: keys as JSONWebKeySet['keys'] } };
}

const WHSEC = /^whsec_[A-Za-z0-9+/]{22,}={0,2}$/;
const HEX_KEY = /^(?:[0-9A-Fa-f]{2}){16,}$/;

function parseWebhooks(r: Reader, ctx: { production: boolean; embedded: boolean; dataDir: string }): WebhooksConfig {
  // Values are secrets: problems name the variable and the expected shape, never the value.
  const platformSecrets = parseList(r, 'WEBHOOK_PLATFORM_SECRETS', WHSEC, {
    message: 'WEBHOOK_PLATFORM_SECRETS must be a comma-separated list of whsec_<base64> secrets (at least 128 bits)',
  });
  const adyenHmacKeys = parseList(r, 'WEBHOOK_ADYEN_HMAC_KEYS', HEX_KEY, {
    message: 'WEBHOOK_ADYEN_HMAC_KEYS must be a comma-separated list of hex HMAC keys (at least 128 bits)',
  });
  const stripeSecrets = parseList(r, 'WEBHOOK_STRIPE_SECRETS', /^whsec_[A-Za-z0-9]{16,}$/, {
    message: 'WEBHOOK_STRIPE_SECRETS must be a comma-separated list of Stripe whsec_… endpoint secrets',
  });
  const basic = r.raw('WEBHOOK_ADYEN_BASIC_AUTH');
  let adyenBasicAuth: WebhooksConfig['adyenBasicAuth'];
  if (basic !== undefined) {
    const colon = basic.indexOf(':');
    if (colon < 1 || colon === basic.length - 1) {
      r.problem('WEBHOOK_ADYEN_BASIC_AUTH must be user:password');
    } else {
      adyenBasicAuth = { username: basic.slice(0, colon), password: basic.slice(colon + 1) };
    }
  }
  const adyenEnvironment = parseAdyenEnvironment(r, { production: ctx.production, adyen: adyenHmacKeys !== undefined });
  if (ctx.production && adyenHmacKeys !== undefined && adyenBasicAuth === undefined && basic === undefined) {
    r.problem('WEBHOOK_ADYEN_BASIC_AUTH is required when NODE_ENV=production and WEBHOOK_ADYEN_HMAC_KEYS is set');
  }
  const none = platformSecrets === undefined && adyenHmacKeys === undefined && stripeSecrets === undefined;
  return {
    platformSecrets,
    adyenHmacKeys,
    adyenBasicAuth,
    adyenEnvironment,
    adyenEnvironmentConfigured: r.raw('WEBHOOK_ADYEN_ENVIRONMENT') !== undefined,
    stripeSecrets,
    toleranceSeconds: r.integer('WEBHOOK_TOLERANCE_SECONDS', 300, 1, 3600),
    generatedDevFile:
      none && ctx.embedded && !ctx.production ? path.join(ctx.dataDir, DEV_WEBHOOK_SECRETS_FILE) : undefined,
  };
}

// --- Adyen environment (issue 16, card-data hardening) ---------------------------------------------
export type AdyenEnvironment = 'test' | 'live';

/**
 * Which Adyen environment may notify this service: an item whose `live` flag says otherwise is
 * refused. Required in production when Adyen is enabled (a live service must not take test
 * notifications, nor the reverse); `test` elsewhere by default.
 */
function parseAdyenEnvironment(r: Reader, ctx: { production: boolean; adyen: boolean }): AdyenEnvironment {
  const value = r.raw('WEBHOOK_ADYEN_ENVIRONMENT');
  if (value === undefined) {
    if (ctx.production && ctx.adyen) {
      r.problem(
        'WEBHOOK_ADYEN_ENVIRONMENT (test or live) is required when NODE_ENV=production and WEBHOOK_ADYEN_HMAC_KEYS is set',
      );
    }
    return 'test';
  }
  if (value !== 'test' && value !== 'live') {
    r.problem('WEBHOOK_ADYEN_ENVIRONMENT must be test or live');
    return 'test';
  }
  return value;
}
// --- end Adyen environment --------------------------------------------------------------------------

function parseList(r: Reader, name: string, item: RegExp, options: { message: string }): string[] | undefined {
  const value = r.raw(name);
  if (value === undefined) return undefined;
  const list = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (list.length === 0 || !list.every((s) => item.test(s))) {
    r.problem(options.message);
    return undefined;
  }
  return list;
}

function parseAlgorithms(r: Reader): readonly JwtAlgorithm[] {
  const value = r.raw('AUTH_ALGORITHMS');
  if (value === undefined) return ['ES256', 'EdDSA', 'RS256', 'PS256'];
  const list = value.split(',').map((s) => s.trim());
  const bad = list.filter((a) => !(ALLOWED_JWT_ALGORITHMS as readonly string[]).includes(a));
  if (bad.length > 0 || list.length === 0) {
    r.problem(`AUTH_ALGORITHMS must be a comma-separated list drawn from ${ALLOWED_JWT_ALGORITHMS.join(', ')}`);
    return ['ES256'];
  }
  return list as JwtAlgorithm[];
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !(value instanceof URL) && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

export function describeDatabase(config: Config): string {
  if (config.database.url === undefined) return `embedded PGlite at ${path.join(config.dataDir, 'pgdata')}`;
  const url = new URL(config.database.url);
  return `PostgreSQL at ${url.hostname}:${url.port || '5432'}${url.pathname}`;
}
