import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { loadConfig } from '../../src/config/config.js';
import { projectRoot } from '../../src/config/project-root.js';
import { issueDevToken, parseTokenArgs } from '../../src/cli/token.js';
import { bearerScopes } from '../../src/http/openapi.js';
import { newId } from '../../src/ids/prefixed-id.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';

const run = promisify(execFile);

describe('development token CLI (npm run token)', () => {
  describe('parseTokenArgs', () => {
    it('when nothing is given, then the defaults apply', () => {
      expect(parseTokenArgs([])).to.deep.equal({
        scopes: [],
        shopperRef: undefined,
        subject: 'dev-user',
        ttlSeconds: 3600,
      });
    });

    it('when scopes are given spaced, comma-separated and repeated, then all are collected', () => {
      const shopper = newId('shp');
      const request = parseTokenArgs([
        '--scope',
        'tokens:read tokens:write',
        '--scope',
        'loyalty:read,loyalty:write',
        '--shopper',
        shopper,
        '--subject',
        'alice',
        '--ttl',
        '60',
      ]);
      expect(request).to.deep.equal({
        scopes: ['tokens:read', 'tokens:write', 'loyalty:read', 'loyalty:write'],
        shopperRef: shopper,
        subject: 'alice',
        ttlSeconds: 60,
      });
    });

    const refused: [string, string[], string | RegExp][] = [
      ['a zero ttl', ['--ttl', '0'], '--ttl'],
      ['a ttl beyond a day', ['--ttl', '86401'], '--ttl'],
      ['a ttl that is not a number', ['--ttl', 'soon'], '--ttl'],
      ['a shopper that is not a reference', ['--shopper', 'shp_4111111111111111'], '--shopper'],
      ['an unknown option', ['--admin'], /unknown option '--admin'/],
      ['a stray argument', ['tokens:read'], /too many arguments/],
      ['a misspelt scope', ['--scope', 'tokens:raed'], /unknown scope tokens:raed; known scopes: .*tokens:read/],
    ];
    for (const [name, argv, message] of refused) {
      it(`when given ${name}, then it is refused`, () => {
        expect(() => parseTokenArgs(argv)).to.throw(message);
      });
    }
  });

  describe('issueDevToken against the service on the embedded default', () => {
    let svc: TestService;
    let dataDir: string;

    before(async () => {
      dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-token-'));
      // No AUTH_* and no MASTER_KEY: the embedded development default trusts the dev issuer.
      svc = await startTestService({ env: { NODE_ENV: 'test', DATA_DIR: dataDir, LOG_LEVEL: 'debug' } });
    });
    after(() => svc.close());

    it('when a token is issued, then /v1/whoami accepts it with its scopes and shopper', async () => {
      expect(svc.config.auth.keys.source).to.equal('dev-issuer');
      const shopper = newId('shp');
      const token = await issueDevToken(
        svc.config,
        parseTokenArgs(['--scope', 'tokens:write tokens:read', '--shopper', shopper, '--subject', 'pos-1']),
      );
      const res = await svc.request('GET', '/v1/whoami', { token });
      expect(res.status, res.text).to.equal(200);
      expect(res.body).to.include({ subject: 'pos-1', shopperReference: shopper });
      expect(res.body.scopes).to.deep.equal(['tokens:read', 'tokens:write']);
    });

    it('when the token comes from another data folder (another dev key), then 401', async () => {
      const otherDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-token-other-'));
      try {
        const token = await issueDevToken(loadConfig({ DATA_DIR: otherDir }), parseTokenArgs([]));
        const res = await svc.request('GET', '/v1/whoami', { token });
        expect(res.status).to.equal(401);
        expect(res.body.code).to.equal('TOKEN_KEY_UNKNOWN');
      } finally {
        fs.rmSync(otherDir, { recursive: true, force: true });
      }
    });

    it('when run as a command, then it prints a token the service accepts', async () => {
      const { stdout } = await run(
        process.execPath,
        ['--import', 'tsx', 'src/cli/token.ts', '--scope', 'loyalty:read', '--subject', 'cli-user'],
        { cwd: projectRoot(), env: { PATH: process.env['PATH'], DATA_DIR: dataDir } },
      );
      const token = stdout.trim();
      expect(token).to.match(/^[\w-]+\.[\w-]+\.[\w-]+$/);
      const res = await svc.request('GET', '/v1/whoami', { token });
      expect(res.status, res.text).to.equal(200);
      expect(res.body).to.include({ subject: 'cli-user' });
    });

    it('when run as a command with a bad argument, then it exits 2 and prints no token', async () => {
      const error = await run(process.execPath, ['--import', 'tsx', 'src/cli/token.ts', '--ttl', '0'], {
        cwd: projectRoot(),
        env: { PATH: process.env['PATH'], DATA_DIR: dataDir },
      }).catch((e: unknown) => e as { code: number; stdout: string; stderr: string });
      expect(error).to.include({ code: 2, stdout: '' });
      expect((error as { stderr: string }).stderr).to.contain('--ttl');
    });
  });

  it('when run as a command with a misspelt scope, then it exits 2 naming the valid scopes, prints no token and makes no key', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-token-scope-'));
    const folder = path.join(dataDir, 'must-not-exist');
    try {
      const error = await run(process.execPath, ['--import', 'tsx', 'src/cli/token.ts', '--scope', 'loyalty:raed'], {
        cwd: projectRoot(),
        env: { PATH: process.env['PATH'], DATA_DIR: folder },
      }).catch((e: unknown) => e as { code: number; stdout: string; stderr: string });
      expect(error).to.include({ code: 2, stdout: '' });
      const { stderr } = error as { stderr: string };
      expect(stderr.trim().split('\n')).to.have.length(1);
      expect(stderr).to.contain('unknown scope loyalty:raed');
      for (const scope of bearerScopes()) expect(stderr).to.contain(scope);
      expect(bearerScopes()).to.include.members(['loyalty:read', 'tokens:write', 'loyalty:admin']);
      expect(fs.existsSync(folder)).to.equal(false);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  describe('when the configuration trusts real keys, then no development token is issued', () => {
    it('when AUTH_PUBLIC_KEYS is set, then issueDevToken refuses', async () => {
      const config = loadConfig(await testEnv());
      expect(config.auth.keys.source).to.equal('static');
      let error: unknown;
      await issueDevToken(config, parseTokenArgs(['--scope', 'loyalty:read'])).catch((e: unknown) => (error = e));
      expect(String(error)).to.contain('does not trust the development issuer');
      fs.rmSync(config.dataDir, { recursive: true, force: true });
    });

    it('when AUTH_JWKS_URL is set, then issueDevToken refuses', async () => {
      const config = loadConfig(
        await testEnv({ AUTH_PUBLIC_KEYS: undefined, AUTH_JWKS_URL: 'https://idp.test.example/jwks.json' }),
      );
      let error: unknown;
      await issueDevToken(config, parseTokenArgs([])).catch((e: unknown) => (error = e));
      expect(String(error)).to.contain('does not trust the development issuer');
      expect(fs.existsSync(path.join(config.dataDir, 'dev-auth-signing-key.json'))).to.equal(false);
      fs.rmSync(config.dataDir, { recursive: true, force: true });
    });
  });
});
