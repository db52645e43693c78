/**
 * Issue 23: `npm run simulate`, the real CLI as a child process against the real service started as
 * a process (src/main.ts). On PGlite the service runs on the embedded default (a fresh data folder:
 * development keys, token issuer and webhook secrets, as `npm start` makes them) and the simulator
 * finds the development secrets there; on PostgreSQL (DATABASE_URL) both get the configured
 * WEBHOOK_* secrets, MASTER_KEY and ALLOW_DEVELOPMENT_DEFAULTS (the development token issuer on a
 * developer's database), as the README's PostgreSQL section sets them.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { proportion } from '../../src/loyalty/earning.js';
import { pointsFor, type ProgrammeRules } from '../../src/loyalty/programme.js';
import { simulatorSettings } from '../../src/simulate/settings.js';
import { createTestDatabase, usingPostgres, type TestDatabase } from '../support/database.js';
import { runNodeCli, startServiceProcess, type CliResult, type ServiceProcess } from '../support/service-process.js';
import { webhookEnv } from '../support/webhooks.js';

const PAN_DIGITS = /\d{12,19}/;

/** The JSON after `balance: ` on the simulator's last balance line. */
function balanceOf(run: CliResult): { available: number; pending: number; lifetimeEarned: number } {
  const line = run.stdout.split('\n').find((l) => l.startsWith('balance: '));
  expect(line, run.stdout).to.be.a('string');
  return JSON.parse((line as string).slice('balance: '.length)) as {
    available: number;
    pending: number;
    lifetimeEarned: number;
  };
}

/** The payment id the simulator's first line names. */
function paymentOf(run: CliResult): string {
  const match = /payment (\S+) →/.exec(run.stdout);
  expect(match, run.stdout).to.not.equal(null);
  return (match as RegExpExecArray)[1] as string;
}

describe('npm run simulate: signed test deliveries to the running service, as a child process', function () {
  this.timeout(300_000);
  let dataDir: string;
  let env: Record<string, string>;
  let db: TestDatabase | undefined;
  let svc: ServiceProcess | undefined;

  const simulate = (args: readonly string[], extraEnv: Record<string, string> = {}): Promise<CliResult> =>
    runNodeCli('src/cli/simulate.ts', [...args, '--url', svc!.url], { ...env, ...serviceAt(svc!.url), ...extraEnv });
  /** The configuration naming the running service (credentials go to the configured service only). */
  const serviceAt = (url: string): Record<string, string> => {
    const { hostname, port } = new URL(url);
    return { HOST: hostname, PORT: port };
  };
  const out = (run: CliResult): string => `--- code ${run.code}\n--- stdout\n${run.stdout}--- stderr\n${run.stderr}`;

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-simulate-'));
    env = { NODE_ENV: 'development', DATA_DIR: dataDir, EVENTS_DISPATCHER_ENABLED: 'false' };
    if (usingPostgres) {
      db = await createTestDatabase();
      env = {
        ...env,
        DATABASE_URL: db.url as string,
        MASTER_KEY: randomBytes(32).toString('base64'),
        ALLOW_DEVELOPMENT_DEFAULTS: 'true',
        ...webhookEnv(),
      };
    }
    svc = await startServiceProcess(env);
  });
  after(async () => {
    await svc?.stop();
    await db?.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('when `purchase` runs with its defaults, then points arrive: pending, available, the refund taken back, as the programme gives', async () => {
    const run = await simulate(['purchase']);
    expect(run.code, out(run)).to.equal(0);
    // Each delivery's status and body, and the points after it.
    expect(
      run.stdout.match(/^ {3}200 \{"eventId":"evt_[a-z2-7]{26}","state":"applied","duplicate":false\}$/gm),
      out(run),
    ).to.have.length(3);
    expect(run.stdout, out(run)).to.match(/1\. authorise[^\n]*\n[^\n]*\n {3}points: available 0, pending 42,/);
    expect(run.stdout, out(run)).to.match(/2\. capture[^\n]*\n[^\n]*\n {3}points: available 42, pending 0,/);

    const token = await runNodeCli('src/cli/token.ts', ['--scope', 'loyalty:read'], env);
    expect(token.code, token.stderr).to.equal(0);
    const programme = (await (
      await fetch(`${svc!.url}/v1/programme`, { headers: { authorization: `Bearer ${token.stdout.trim()}` } })
    ).json()) as { rules: ProgrammeRules };
    const earned = pointsFor(4200, 'EUR', 'online', programme.rules);
    const expected = earned - proportion(earned, 1000, 4200); // 42.00 EUR captured, 10.00 refunded
    const balance = balanceOf(run);
    expect(expected).to.be.greaterThan(0);
    expect(balance.available, out(run)).to.equal(expected);
    expect(balance).to.include({ pending: 0, lifetimeEarned: earned });
    // The card is named by its last four only.
    expect(run.stdout).to.contain('visa •••• 1111');
    expect(run.stdout + run.stderr).to.not.match(PAN_DIGITS);
  });

  for (const [provider, pan, last4] of [
    ['platform', '4242424242424242', '4242'],
    ['adyen', '5555555555554444', '4444'],
    ['stripe', '378282246310005', '0005'],
  ] as const) {
    it(`when ${provider} authorise then capture are simulated, then the service accepts both and the points become available`, async () => {
      const authorise = await simulate([provider, 'authorise', '--card', pan, '--amount', '12.50']);
      expect(authorise.code, out(authorise)).to.equal(0);
      expect(authorise.stdout, out(authorise)).to.match(/^200 /m);
      expect(balanceOf(authorise), out(authorise)).to.include({ available: 0, pending: 12 });
      const capture = await simulate([
        provider,
        'capture',
        '--payment',
        paymentOf(authorise),
        '--card',
        pan,
        '--amount',
        '12.50',
      ]);
      expect(capture.code, out(capture)).to.equal(0);
      expect(capture.stdout, out(capture)).to.match(/^200 /m);
      expect(balanceOf(capture), out(capture)).to.include({ available: 12, pending: 0 });
      expect(capture.stdout).to.contain(`•••• ${last4}`);
      expect(authorise.stdout + capture.stdout).to.not.match(PAN_DIGITS);
    });
  }

  for (const [provider, variable, wrong] of [
    ['platform', 'WEBHOOK_PLATFORM_SECRETS', `whsec_${randomBytes(32).toString('base64')}`],
    ['adyen', 'WEBHOOK_ADYEN_HMAC_KEYS', randomBytes(32).toString('hex').toUpperCase()],
    ['stripe', 'WEBHOOK_STRIPE_SECRETS', `whsec_${randomBytes(24).toString('hex')}`],
  ] as const) {
    it(`when ${variable} holds another secret than the service's, then ${provider} authorise fails with one line and exit 1`, async () => {
      const run = await simulate([provider, 'authorise'], { [variable]: wrong });
      expect(run.code, out(run)).to.equal(1);
      const lines = run.stderr.trimEnd().split('\n');
      expect(lines, out(run)).to.have.length(1);
      expect(lines[0]).to.match(
        new RegExp(`^simulate: the service refused the delivery: .* 401 WEBHOOK_SIGNATURE_INVALID: .*${variable}`),
      );
    });
  }

  it('when the configuration is production or live, --url is plain http to another host, or an argument holds a card number, then it refuses and echoes no card number (M4, L1)', async () => {
    for (const extra of [{ NODE_ENV: 'production' }, { WEBHOOK_ADYEN_ENVIRONMENT: 'live' }]) {
      const refused = await simulate(['platform', 'authorise'], extra);
      expect(refused.code, out(refused)).to.equal(1);
      expect(refused.stderr).to.contain('--allow-production');
      expect(refused.stdout).to.equal('');
    }
    const http = await runNodeCli('src/cli/simulate.ts', ['purchase', '--url', 'http://example.com:8080'], env);
    expect(http.code, out(http)).to.equal(2);
    expect(http.stderr).to.contain('plain http:// is allowed to a loopback host only');
    for (const args of [
      ['platform', 'authorise', '--amount', '4111-1111-1111-1111'],
      ['purchase', '--provider', '4111111111111111'],
      ['platform', 'capture', '--payment', 'pay-4111111111111111'],
    ]) {
      const run = await simulate(args);
      expect(run.code, out(run)).to.equal(2);
      expect(run.stdout + run.stderr, out(run)).to.not.match(/4111.?1111.?1111.?1111/);
    }
  });

  it('when --url is another service than the configured one, then no minted bearer and no configured Basic auth is sent to it', async () => {
    const seen: (string | undefined)[] = [];
    const server = http.createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(404, { 'content-type': 'application/json' }).end('{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as AddressInfo).port;
      const run = await runNodeCli('src/cli/simulate.ts', ['adyen', 'authorise', '--url', `http://127.0.0.1:${port}`], {
        ...env,
        WEBHOOK_ADYEN_BASIC_AUTH: 'adyen:not-for-another-host',
      });
      expect(run.code, out(run)).to.equal(1);
      expect(run.stderr).to.contain('no bearer is minted for another host');
      expect(seen.filter((h) => h !== undefined)).to.deep.equal([]);
    } finally {
      server.close();
    }
    const config = { webhooks: { adyenBasicAuth: { username: 'a', password: 'b' }, adyenEnvironment: 'test' } };
    const other = simulatorSettings(config as never, { configuredService: false });
    expect(other.adyenBasicAuth).to.equal(undefined);
    expect(simulatorSettings(config as never, { configuredService: true }).adyenBasicAuth).to.deep.equal({
      username: 'a',
      password: 'b',
    });
  });

  it('when a card is not a test card or an option is unknown, then it exits 2 before sending anything; --help lists the environment and exit codes', async () => {
    const notTest = await simulate(['platform', 'authorise', '--card', '4000000000000077']);
    expect(notTest.code, out(notTest)).to.equal(2);
    expect(notTest.stderr).to.contain('ending 0077 is not a published test card number');
    expect(notTest.stdout + notTest.stderr).to.not.contain('4000000000000077');
    const unknown = await simulate(['purchase', '--amout', '5']);
    expect(unknown.code, out(unknown)).to.equal(2);
    const help = await runNodeCli('src/cli/simulate.ts', ['adyen', 'refund', '--help'], env);
    expect(help.code, out(help)).to.equal(0);
    for (const text of ['--payment', '--secret', 'WEBHOOK_ADYEN_HMAC_KEYS', 'DATA_DIR', 'Exit codes:']) {
      expect(help.stdout).to.contain(text);
    }
  });
});
