/**
 * Development conveniences never reach a real deployment by accident (issue 16): beside a
 * DATABASE_URL the development token issuer, single-operator key management and private or http://
 * event targets need ALLOW_DEVELOPMENT_DEFAULTS=true, whatever NODE_ENV says (unset reads as
 * development); production refuses them and the opt-in itself. The settings that weaken the
 * production posture are listed at start-up.
 */
import { expect } from 'chai';
import { ConfigError, loadConfig, type Env } from '../../src/config/config.js';
import { productionDowngrades } from '../../src/config/downgrades.js';
import { TEST_AUDIENCE, TEST_ISSUER, testJwks } from '../support/auth.js';
import { startTestService, testEnv } from '../support/harness.js';

const KEY = Buffer.alloc(32, 9).toString('base64');
const SHARED: Env = { DATABASE_URL: 'postgres://svc@db.internal:5432/loyalty', MASTER_KEY: KEY, DATA_DIR: '/tmp/lv-x' };

function problemsOf(env: Env, options?: Parameters<typeof loadConfig>[1]): string[] {
  try {
    loadConfig(env, options);
  } catch (error) {
    expect(error).to.be.instanceOf(ConfigError);
    return [...(error as ConfigError).problems];
  }
  return [];
}

describe('development defaults beside a DATABASE_URL', () => {
  describe('when DATABASE_URL is set and a development convenience is in play, then start-up stops naming the variables', () => {
    const cases: [string, Env, string[]][] = [
      [
        'no identity provider, NODE_ENV unset',
        {},
        ['AUTH_JWKS_URL or AUTH_PUBLIC_KEYS', 'ALLOW_DEVELOPMENT_DEFAULTS=true'],
      ],
      [
        'no identity provider, NODE_ENV=development',
        { NODE_ENV: 'development' },
        ['AUTH_JWKS_URL or AUTH_PUBLIC_KEYS'],
      ],
      ['no identity provider, NODE_ENV=test', { NODE_ENV: 'test' }, ['AUTH_JWKS_URL or AUTH_PUBLIC_KEYS']],
      [
        'KEYS_SINGLE_OPERATOR=true',
        { KEYS_SINGLE_OPERATOR: 'true' },
        ['KEYS_SINGLE_OPERATOR', 'ALLOW_DEVELOPMENT_DEFAULTS'],
      ],
      [
        'EVENTS_ALLOW_PRIVATE_TARGETS=true',
        { EVENTS_ALLOW_PRIVATE_TARGETS: 'true' },
        ['EVENTS_ALLOW_PRIVATE_TARGETS', 'ALLOW_DEVELOPMENT_DEFAULTS'],
      ],
    ];
    for (const [name, extra, expected] of cases) {
      it(`when ${name}, then refused`, () => {
        const problems = problemsOf({ ...SHARED, ...extra }).join('\n');
        for (const text of expected) expect(problems).to.contain(text);
        expect(problems).not.to.contain('db.internal');
      });
    }
  });

  it('when ALLOW_DEVELOPMENT_DEFAULTS=true, then the development issuer and the other conveniences are allowed beside DATABASE_URL', () => {
    const config = loadConfig({
      ...SHARED,
      ALLOW_DEVELOPMENT_DEFAULTS: 'true',
      KEYS_SINGLE_OPERATOR: 'true',
      EVENTS_ALLOW_PRIVATE_TARGETS: 'true',
    });
    expect(config.auth.keys.source).to.equal('dev-issuer');
    expect(config.allowDevelopmentDefaults).to.equal(true);
    expect(config.keys.singleOperator).to.equal(true);
    expect(config.events.allowPrivateTargets).to.equal(true);
    expect(config.events.allowHttpTargets).to.equal(true);
  });

  it('when DATABASE_URL is set with a real identity provider and no opt-in, then http:// event targets are off even in development', async () => {
    const config = loadConfig({
      ...SHARED,
      NODE_ENV: 'development',
      AUTH_PUBLIC_KEYS: JSON.stringify(await testJwks()),
      AUTH_ISSUER: TEST_ISSUER,
      AUTH_AUDIENCE: TEST_AUDIENCE,
    });
    expect(config.auth.keys.source).to.equal('static');
    expect(config.events.allowHttpTargets).to.equal(false);
  });

  it('when NODE_ENV=production, then ALLOW_DEVELOPMENT_DEFAULTS itself is refused', () => {
    const problems = problemsOf({ ...SHARED, NODE_ENV: 'production', ALLOW_DEVELOPMENT_DEFAULTS: 'true' }).join('\n');
    expect(problems).to.contain('ALLOW_DEVELOPMENT_DEFAULTS is refused when NODE_ENV=production');
  });

  it('when there is no DATABASE_URL (a fresh machine), then the development issuer needs no opt-in', () => {
    const config = loadConfig({ DATA_DIR: '/tmp/lv-fresh' });
    expect(config.auth.keys.source).to.equal('dev-issuer');
    expect(config.masterKey.source).to.equal('generated-dev');
  });

  it('when a CLI that never verifies tokens runs beside DATABASE_URL, then it needs no identity provider', () => {
    expect(problemsOf(SHARED, { verifiesTokens: false })).to.deep.equal([]);
    // Single-operator key management is a CLI convenience: still refused without the opt-in.
    expect(problemsOf({ ...SHARED, KEYS_SINGLE_OPERATOR: 'true' }, { verifiesTokens: false }).join('\n')).to.contain(
      'KEYS_SINGLE_OPERATOR',
    );
  });

  describe('an http:// JWKS URL', () => {
    const IDP: Env = { AUTH_ISSUER: 'https://idp.example/', AUTH_AUDIENCE: 'vault' };
    const HTTP_JWKS = 'http://idp.internal/.well-known/jwks.json';

    it('when DATABASE_URL is set without the opt-in (NODE_ENV unset), then it is refused', () => {
      const problems = problemsOf({ ...SHARED, ...IDP, AUTH_JWKS_URL: HTTP_JWKS }).join('\n');
      expect(problems).to.contain('AUTH_JWKS_URL must be an https:// URL');
      expect(problems).not.to.contain('db.internal');
    });

    it('when NODE_ENV=development beside DATABASE_URL without the opt-in, then it is refused', () => {
      expect(
        problemsOf({ ...SHARED, ...IDP, NODE_ENV: 'development', AUTH_JWKS_URL: HTTP_JWKS }).join('\n'),
      ).to.contain('AUTH_JWKS_URL must be an https:// URL');
    });

    it('when NODE_ENV=production, then it is refused', () => {
      expect(problemsOf({ ...SHARED, ...IDP, NODE_ENV: 'production', AUTH_JWKS_URL: HTTP_JWKS }).join('\n')).to.contain(
        'AUTH_JWKS_URL must be an https:// URL',
      );
    });

    it('when development defaults are in effect (embedded, or the opt-in), then it is allowed and listed as a downgrade', () => {
      for (const env of [
        { DATA_DIR: '/tmp/lv-fresh', ...IDP, AUTH_JWKS_URL: HTTP_JWKS },
        { ...SHARED, ...IDP, ALLOW_DEVELOPMENT_DEFAULTS: 'true', AUTH_JWKS_URL: HTTP_JWKS },
      ]) {
        const config = loadConfig(env);
        expect(config.auth.keys.source).to.equal('jwks-url');
        expect(productionDowngrades(config).join('\n')).to.contain('AUTH_JWKS_URL is http://');
      }
    });

    it('when it is https://, then it is accepted beside DATABASE_URL and not listed', () => {
      const config = loadConfig({ ...SHARED, ...IDP, AUTH_JWKS_URL: 'https://idp.example/jwks.json' });
      expect(productionDowngrades(config).join('\n')).not.to.contain('AUTH_JWKS_URL');
    });
  });

  describe('a database meant but not named', () => {
    const cases: [string, Env, string[]][] = [
      ['DATABASE_URL is empty', { DATABASE_URL: '' }, ['DATABASE_URL is set but blank']],
      ['DATABASE_URL is blanks', { DATABASE_URL: '   ' }, ['DATABASE_URL is set but blank']],
      ['PGHOST alone', { PGHOST: 'db.internal' }, ['PGHOST is set but DATABASE_URL is not']],
      [
        'PGHOST, PGUSER and PGDATABASE',
        { PGHOST: 'db.internal', PGUSER: 'svc', PGDATABASE: 'loyalty' },
        ['PGHOST, PGUSER, PGDATABASE are set but DATABASE_URL is not'],
      ],
    ];
    for (const [name, extra, expected] of cases) {
      it(`when ${name}, then start-up stops naming the variables instead of using the embedded database`, () => {
        const problems = problemsOf({ DATA_DIR: '/tmp/lv-fresh', ...extra }).join('\n');
        for (const text of expected) expect(problems).to.contain(text);
        expect(problems).not.to.contain('db.internal');
      });
    }
  });

  describe('the development issuer and HOST', () => {
    it('when HOST is not loopback and the development issuer is trusted, then refused without the opt-in', () => {
      for (const host of ['0.0.0.0', '::', '10.0.0.5', 'vault.internal']) {
        const problems = problemsOf({ DATA_DIR: '/tmp/lv-fresh', HOST: host }).join('\n');
        expect(problems, host).to.contain('listens beyond this machine while the development token issuer is trusted');
      }
    });

    it('when HOST is loopback (or unset), or the opt-in is set, then the development issuer is allowed', () => {
      for (const host of [undefined, '127.0.0.1', '127.0.0.2', 'localhost', '::1', '[::1]']) {
        const env: Env = { DATA_DIR: '/tmp/lv-fresh', ...(host === undefined ? {} : { HOST: host }) };
        expect(problemsOf(env), String(host)).to.deep.equal([]);
      }
      expect(
        problemsOf({ DATA_DIR: '/tmp/lv-fresh', HOST: '0.0.0.0', ALLOW_DEVELOPMENT_DEFAULTS: 'true' }),
      ).to.deep.equal([]);
    });

    it('when HOST is not loopback with a real identity provider, then it is accepted', async () => {
      expect(
        problemsOf({
          DATA_DIR: '/tmp/lv-fresh',
          HOST: '0.0.0.0',
          AUTH_PUBLIC_KEYS: JSON.stringify(await testJwks()),
          AUTH_ISSUER: TEST_ISSUER,
          AUTH_AUDIENCE: TEST_AUDIENCE,
        }),
      ).to.deep.equal([]);
    });
  });

  describe('when JWT_MAX_TOKEN_AGE is set, then it is read as a duration', () => {
    const cases: [string, number | undefined | 'problem'][] = [
      ['3600', 3600],
      ['90m', 5400],
      ['24h', 86_400],
      ['7d', 604_800],
      ['0', undefined],
      ['1y', 'problem'],
      ['-5', 'problem'],
      ['400d', 'problem'],
    ];
    for (const [value, expected] of cases) {
      it(`when it is ${value}, then ${expected === undefined ? 'no limit' : String(expected)}`, () => {
        const env = { DATA_DIR: '/tmp/lv-age', JWT_MAX_TOKEN_AGE: value };
        if (expected === 'problem') expect(problemsOf(env).join('\n')).to.contain('JWT_MAX_TOKEN_AGE');
        else expect(loadConfig(env).auth.maxTokenAgeSeconds).to.equal(expected);
      });
    }
    it('when it is not set, then 24 hours', () => {
      expect(loadConfig({ DATA_DIR: '/tmp/lv-age' }).auth.maxTokenAgeSeconds).to.equal(86_400);
    });
  });

  describe('production downgrades', () => {
    it('when the production posture is weakened, then each setting is named in the list', async () => {
      const config = loadConfig({
        ...(await testEnv()),
        DETOKENISE_ENABLED: 'true',
        TRUST_PROXY: 'true',
        TLS_PORT: '0',
        TLS_CERT_FILE: '/tmp/cert.pem',
        TLS_KEY_FILE: '/tmp/key.pem',
        CARD_ROUTES_AUTH: 'jwt',
        JWT_MAX_TOKEN_AGE: '0',
      });
      const list = productionDowngrades(config).join('\n');
      for (const name of [
        'CARD_ROUTES_AUTH=jwt with TLS_PORT',
        'DETOKENISE_ENABLED',
        'TRUST_PROXY',
        'JWT_MAX_TOKEN_AGE=0',
      ]) {
        expect(list).to.contain(name);
      }
    });

    it('when nothing is weakened, then the list is empty', async () => {
      expect(productionDowngrades(loadConfig(await testEnv()))).to.deep.equal([]);
    });

    it('when the service starts with downgrades, then one warn line lists them all', async () => {
      const svc = await startTestService({ env: await testEnv({ DETOKENISE_ENABLED: 'true', TRUST_PROXY: 'true' }) });
      try {
        await new Promise((resolve) => setTimeout(resolve, 50));
        const { lines } = {
          lines: svc
            .logs()
            .split('\n')
            .filter((l) => l.includes('SECURITY DOWNGRADE')),
        };
        expect(lines).to.have.length(1);
        const line = JSON.parse(lines[0] as string) as { level: number | string; downgrades: string[] };
        expect(line.downgrades).to.have.length(2);
        expect(line.downgrades.join('\n')).to.contain('DETOKENISE_ENABLED').and.to.contain('TRUST_PROXY');
        expect(String(line.level)).to.be.oneOf(['40', 'warn']);
      } finally {
        await svc.close();
      }
    });
  });
});
