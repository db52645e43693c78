import { expect } from 'chai';
import { ConfigError, loadConfig, type Env } from '../src/config/config.js';

const KEY = Buffer.alloc(32, 7).toString('base64');
const JWKS = JSON.stringify({
  keys: [{ kty: 'OKP', crv: 'Ed25519', x: 'l8o0kMqjXqf1d8Rnx3n2bV2nR9Q3p4gH9aE2dG5w9yk' }],
});
const production: Env = {
  NODE_ENV: 'production',
  DATABASE_URL: 'postgres://svc:secret-password@db.internal:5432/loyalty',
  MASTER_KEY_FILE: '/run/secrets/lv-master-key',
  AUTH_ISSUER: 'https://idp.example/',
  AUTH_AUDIENCE: 'loyalty-vault',
  AUTH_JWKS_URL: 'https://idp.example/.well-known/jwks.json',
};

function problemsOf(env: Env): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).to.be.instanceOf(ConfigError);
    return [...(error as ConfigError).problems];
  }
  throw new Error('expected a ConfigError');
}

describe('configuration', () => {
  describe('when a value is malformed or missing, then start-up stops naming the variable', () => {
    const cases: [string, Env, string][] = [
      ['PORT not a number', { PORT: 'eighty' }, 'PORT'],
      ['PORT out of range', { PORT: '70000' }, 'PORT'],
      ['NODE_ENV unknown', { NODE_ENV: 'staging' }, 'NODE_ENV'],
      ['LOG_LEVEL unknown', { LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
      ['DATABASE_URL not postgres', { DATABASE_URL: 'mysql://x/y', MASTER_KEY: KEY }, 'DATABASE_URL'],
      ['DATABASE_URL without a master key', { DATABASE_URL: 'postgres://h/db' }, 'MASTER_KEY'],
      ['MASTER_KEY too short', { MASTER_KEY: Buffer.alloc(16).toString('base64') }, 'MASTER_KEY'],
      ['MASTER_KEY and MASTER_KEY_FILE both set', { MASTER_KEY: KEY, MASTER_KEY_FILE: '/k' }, 'mutually exclusive'],
      [
        'AUTH_PUBLIC_KEYS not JSON',
        { AUTH_PUBLIC_KEYS: '{nope', AUTH_ISSUER: 'i', AUTH_AUDIENCE: 'a' },
        'AUTH_PUBLIC_KEYS',
      ],
      [
        'AUTH_PUBLIC_KEYS holding a private key',
        { AUTH_PUBLIC_KEYS: JSON.stringify({ keys: [{ kty: 'EC', d: 'x' }] }), AUTH_ISSUER: 'i', AUTH_AUDIENCE: 'a' },
        'public asymmetric keys only',
      ],
      [
        'AUTH_PUBLIC_KEYS holding a symmetric key',
        { AUTH_PUBLIC_KEYS: JSON.stringify({ keys: [{ kty: 'oct', k: 'x' }] }), AUTH_ISSUER: 'i', AUTH_AUDIENCE: 'a' },
        'public asymmetric keys only',
      ],
      ['AUTH_JWKS_URL without issuer', { AUTH_JWKS_URL: 'https://idp/jwks', AUTH_AUDIENCE: 'a' }, 'AUTH_ISSUER'],
      ['AUTH_JWKS_URL without audience', { AUTH_JWKS_URL: 'https://idp/jwks', AUTH_ISSUER: 'i' }, 'AUTH_AUDIENCE'],
      [
        'AUTH_JWKS_URL and AUTH_PUBLIC_KEYS both set',
        { AUTH_JWKS_URL: 'https://i/j', AUTH_PUBLIC_KEYS: JWKS },
        'mutually exclusive',
      ],
      ['AUTH_ALGORITHMS with HS256', { AUTH_ALGORITHMS: 'ES256,HS256' }, 'AUTH_ALGORITHMS'],
      ['AUTH_ALGORITHMS with none', { AUTH_ALGORITHMS: 'none' }, 'AUTH_ALGORITHMS'],
      [
        'production with the env master key source',
        { ...production, MASTER_KEY_FILE: undefined, MASTER_KEY: KEY },
        'MASTER_KEY (the env master key source) is refused when NODE_ENV=production',
      ],
      [
        'production with MASTER_KEY_PREVIOUS',
        { ...production, MASTER_KEY_PREVIOUS: KEY },
        'MASTER_KEY_PREVIOUS is refused when NODE_ENV=production unless MASTER_KEY_ENV_ALLOWED=true',
      ],
      [
        'MASTER_KEY_SOURCE unknown',
        { MASTER_KEY_SOURCE: 'vault' },
        'MASTER_KEY_SOURCE must be one of env, file, pkcs11',
      ],
      ['MASTER_KEY_SOURCE=env without MASTER_KEY', { MASTER_KEY_SOURCE: 'env' }, 'MASTER_KEY is required when'],
      ['MASTER_KEY_SOURCE=file without the file', { MASTER_KEY_SOURCE: 'file' }, 'MASTER_KEY_FILE is required when'],
      [
        'MASTER_KEY_SOURCE=file with MASTER_KEY set too',
        { MASTER_KEY_SOURCE: 'file', MASTER_KEY_FILE: '/k', MASTER_KEY: KEY },
        'MASTER_KEY is set but MASTER_KEY_SOURCE=file',
      ],
      [
        'MASTER_KEY_SOURCE=pkcs11 without the token settings',
        { MASTER_KEY_SOURCE: 'pkcs11', PKCS11_KEY_LABEL: 'kek' },
        'MASTER_KEY_SOURCE=pkcs11 needs PKCS11_MODULE',
      ],
      [
        'PKCS11 settings incomplete',
        { PKCS11_MODULE: '/usr/lib/softhsm/libsofthsm2.so', PKCS11_TOKEN_LABEL: 't' },
        'PKCS11_MODULE, PKCS11_TOKEN_LABEL and PKCS11_PIN_FILE must be set together',
      ],
      ['a PIN in the environment', { PKCS11_PIN: '1234' }, 'PKCS11_PIN is not accepted'],
      [
        'PKCS11_MODULE relative',
        { PKCS11_MODULE: 'libsofthsm2.so', PKCS11_TOKEN_LABEL: 't', PKCS11_PIN_FILE: '/p' },
        'PKCS11_MODULE must be an absolute path',
      ],
      [
        'a previous token key without the token',
        { MASTER_KEY: KEY, PKCS11_PREVIOUS_KEY_LABEL: 'old' },
        'PKCS11_PREVIOUS_KEY_LABEL needs PKCS11_MODULE',
      ],
      ['production without DATABASE_URL', { ...production, DATABASE_URL: undefined }, 'DATABASE_URL is required'],
      [
        'production without a master key',
        { ...production, MASTER_KEY_FILE: undefined },
        'MASTER_KEY or MASTER_KEY_FILE is required',
      ],
      [
        'production without auth keys',
        { ...production, AUTH_JWKS_URL: undefined },
        'AUTH_JWKS_URL or AUTH_PUBLIC_KEYS',
      ],
      ['production with an http JWKS URL', { ...production, AUTH_JWKS_URL: 'http://idp/jwks' }, 'https://'],
      ['BODY_LIMIT_BYTES negative', { BODY_LIMIT_BYTES: '-1' }, 'BODY_LIMIT_BYTES'],
      ['TRUST_PROXY not a boolean', { TRUST_PROXY: 'maybe' }, 'TRUST_PROXY'],
      [
        'production allowing private webhook targets',
        { ...production, EVENTS_ALLOW_PRIVATE_TARGETS: 'true' },
        'EVENTS_ALLOW_PRIVATE_TARGETS is for development only',
      ],
      ['EVENTS_MAX_ATTEMPTS zero', { EVENTS_MAX_ATTEMPTS: '0' }, 'EVENTS_MAX_ATTEMPTS'],
      ['EVENTS_TIMEOUT_MS too long', { EVENTS_TIMEOUT_MS: '600000' }, 'EVENTS_TIMEOUT_MS'],
      [
        'EVENTS_DISPATCHER_ENABLED not a boolean',
        { EVENTS_DISPATCHER_ENABLED: 'sometimes' },
        'EVENTS_DISPATCHER_ENABLED',
      ],
    ];
    for (const [name, env, expected] of cases) {
      it(`when ${name}, then the error names it`, () => {
        const problems = problemsOf(env);
        expect(problems.join('\n')).to.contain(expected);
      });
    }
  });

  it('when several values are wrong, then every problem is reported at once', () => {
    expect(problemsOf({ PORT: 'x', LOG_LEVEL: 'y', NODE_ENV: 'z' })).to.have.length(3);
  });

  it('when a secret is malformed, then its value is never repeated in the message', () => {
    const secret = 'c2VjcmV0LXZhbHVlLXRoYXQtaXMtd3Jvbmc';
    const message = problemsOf({ MASTER_KEY: secret, DATABASE_URL: 'mysql://user:hunter2@h/db' }).join('\n');
    expect(message).not.to.contain(secret);
    expect(message).not.to.contain('hunter2');
  });

  it('when nothing is set, then the embedded development defaults apply', () => {
    const config = loadConfig({});
    expect(config.port).to.equal(8080);
    expect(config.database.url).to.equal(undefined);
    expect(config.masterKey.source).to.equal('generated-dev');
    expect(config.auth.keys.source).to.equal('dev-issuer');
    expect(config.auth.algorithms).to.deep.equal(['ES256', 'EdDSA', 'RS256', 'PS256']);
    expect(config.events).to.include({ dispatcherEnabled: true, allowHttpTargets: true, allowPrivateTargets: false });
  });

  it('when MASTER_KEY_ENV_ALLOWED=true in production, then the env source loads and is listed as a downgrade', async () => {
    const { productionDowngrades } = await import('../src/config/downgrades.js');
    const config = loadConfig({
      ...production,
      MASTER_KEY_FILE: undefined,
      MASTER_KEY: KEY,
      MASTER_KEY_ENV_ALLOWED: 'true',
    });
    expect(config.masterKey).to.deep.equal({ source: 'env', keyBase64: KEY });
    expect(productionDowngrades(config).join('\n')).to.contain('MASTER_KEY_ENV_ALLOWED=true');
  });

  it('when MASTER_KEY_SOURCE=pkcs11 names a token, then the configuration holds the PIN file path, never a PIN', () => {
    const config = loadConfig({
      ...production,
      MASTER_KEY_FILE: undefined,
      MASTER_KEY_SOURCE: 'pkcs11',
      PKCS11_MODULE: '/usr/lib/softhsm/libsofthsm2.so',
      PKCS11_TOKEN_LABEL: 'lv-prod',
      PKCS11_KEY_LABEL: 'lv-kek-2026',
      PKCS11_PIN_FILE: '/run/secrets/pkcs11-pin',
      PKCS11_PREVIOUS_KEY_LABEL: 'lv-kek-2024',
    });
    const pkcs11 = {
      module: '/usr/lib/softhsm/libsofthsm2.so',
      tokenLabel: 'lv-prod',
      pinFile: '/run/secrets/pkcs11-pin',
      timeoutMs: 5000,
    };
    expect(config.masterKey).to.deep.equal({ source: 'pkcs11', pkcs11, keyLabel: 'lv-kek-2026' });
    expect(config.masterKeyPreviousSources).to.deep.equal([{ source: 'pkcs11', pkcs11, keyLabel: 'lv-kek-2024' }]);
  });

  it('when a complete production environment is given, then it loads and is frozen', () => {
    const config = loadConfig(production);
    expect(config.nodeEnv).to.equal('production');
    expect(config.masterKey).to.deep.equal({ source: 'file', file: '/run/secrets/lv-master-key' });
    expect(config.auth.keys.source).to.equal('jwks-url');
    expect(config.events).to.include({ allowHttpTargets: false, allowPrivateTargets: false, maxAttempts: 15 });
    expect(Object.isFrozen(config)).to.equal(true);
    expect(Object.isFrozen(config.database)).to.equal(true);
    expect(() => {
      (config as { port: number }).port = 1;
    }).to.throw(TypeError);
  });
});
