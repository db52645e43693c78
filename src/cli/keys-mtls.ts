/**
 * `keys mtls …`: the client CA of the card-data clients (tills, checkout, the platform gateway).
 *
 *   mtls init-ca [--out ca.pem]
 *   mtls issue --client <name> --scopes <s1,s2> [--days N] --out <file.p12> (--password-out <file> | --password-file <file>)
 *   mtls issue --client <name> --scopes <s1,s2> [--days N] --csr <request.pem> --out <cert.pem>
 *   mtls register --cert <cert.pem> --client <name> --scopes <s1,s2>   (a certificate of TLS_CLIENT_CA)
 *   mtls list [--all] [--json]
 *   mtls revoke <serial> --reason <text>
 *   mtls revocations verify      (the sealed revocation list against its head; exit 1 when broken)
 *
 * A bundle's password never reaches stdout (a terminal's scrollback, a CI log, a screen share): either
 * the CLI generates it and writes it to `--password-out`, a new file created with mode 0600 (never an
 * existing one: it could be a link to somewhere else, or an earlier bundle's password still needed),
 * or it reads it from `--password-file`. One of the two is required.
 */
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { CLIENT_CERTIFICATE_SCOPES, ClientCertificateAuthority } from '../mtls/client-certificates.js';
import type { ClientCertificateRecord } from '../mtls/client-certificate-records.js';
import { splitPemBundle } from '../mtls/certificate-authority.js';
import { auditedRevocationsProblem, readRevocationHead, verifyRevocationList } from '../mtls/revocation-list.js';
import type { KeysContext } from './keys-context.js';
import { UsageError } from './usage-error.js';

export const MTLS_USAGE = `  mtls init-ca [--out <ca.pem>]                   create the client CA (then: rotate --purpose mtls-client-ca)
  mtls issue --client <name> --scopes <s,…> [--days N] --out <file.p12> (--password-out <file> | --password-file <file>)
                                                  key + certificate in a PKCS#12 bundle; its password generated
                                                  into a new file (mode 0600) or read from one, never printed
  mtls issue --client <name> --scopes <s,…> [--days N] --csr <request.pem> --out <cert.pem>
                                                  certificate for a key made on the device (RSA ≥ 2048)
                                                  scopes: ${CLIENT_CERTIFICATE_SCOPES.join(', ')}
  mtls register --cert <cert.pem> --client <name> --scopes <s,…>
                                                  record a certificate issued by a CA of TLS_CLIENT_CA
  mtls list [--all] [--json]                      certificates in force (--all: revoked too)
  mtls revoke <serial> --reason <text>            refused by every instance within MTLS_REVOCATION_CHECK_MS
  mtls revocations verify                         check the sealed revocation list (exit 1 when tampered with)
`;

const DEFAULT_DAYS = 365;

export async function mtlsCommand(
  args: readonly string[],
  ctx: KeysContext,
  out: (t: string) => void,
): Promise<number> {
  const [sub, ...rest] = args;
  const ca = new ClientCertificateAuthority({
    knex: ctx.knex,
    masterKey: ctx.masterKey,
    actor: ctx.actor,
    cryptoperiodDays: ctx.policy.cryptoperiodDays['mtls-client-ca'],
  });
  switch (sub) {
    case 'init-ca': {
      const { values } = parseArgs({ args: rest, options: { out: { type: 'string' } }, strict: true });
      const created = await ca.initCa();
      out(`created the client CA: mtls-client-ca v${created.version} (active), its key wrapped by the master key`);
      if (values.out !== undefined) {
        fs.writeFileSync(values.out, created.certificatePem);
        out(`wrote its certificate to ${values.out}`);
      }
      return 0;
    }
    case 'issue':
      return issue(rest, ca, out);
    case 'register': {
      const { values } = parseArgs({
        args: rest,
        options: { cert: { type: 'string' }, client: { type: 'string' }, scopes: { type: 'string' } },
        strict: true,
      });
      if (values.cert === undefined || values.client === undefined || values.scopes === undefined) {
        throw new UsageError('mtls register needs --cert, --client and --scopes');
      }
      const externalCas = splitPemBundle(ctx.externalClientCaPem ?? '');
      if (externalCas.length === 0) {
        throw new UsageError('mtls register needs TLS_CLIENT_CA (the external CA that issued the certificate)');
      }
      const record = await ca.register({
        certificatePem: fs.readFileSync(values.cert, 'utf8'),
        client: values.client,
        scopes: scopesOf(values.scopes),
        externalCaPems: externalCas,
      });
      out(`registered ${describe(record)}`);
      return 0;
    }
    case 'list': {
      const { values } = parseArgs({
        args: rest,
        options: { all: { type: 'boolean', default: false }, json: { type: 'boolean', default: false } },
        strict: true,
      });
      const records = await ca.list({ includeRevoked: values.all });
      if (values.json) out(JSON.stringify(records, null, 2));
      else if (records.length === 0) out('no client certificates');
      else for (const r of records) out(describe(r));
      return 0;
    }
    case 'revoke': {
      const { values, positionals } = parseArgs({
        args: rest,
        options: { reason: { type: 'string' } },
        allowPositionals: true,
        strict: true,
      });
      const [serial] = positionals;
      if (serial === undefined || values.reason === undefined) {
        throw new UsageError('mtls revoke <serial> --reason <text>');
      }
      const revoked = await ca.revoke(serial, values.reason);
      out(
        `revoked ${revoked.serial} (${revoked.clientName}); every instance refuses it within its revocation check interval`,
      );
      return 0;
    }
    case 'revocations': {
      const { positionals } = parseArgs({ args: rest, options: {}, allowPositionals: true, strict: true });
      if (positionals.length !== 1 || positionals[0] !== 'verify') throw new UsageError('mtls revocations verify');
      const result = await verifyRevocationList(ctx.knex, ctx.masterKey);
      if (!result.ok) {
        out(`revocation list BROKEN: ${result.problem}`);
        return 1;
      }
      const audited = await auditedRevocationsProblem(ctx.knex, await readRevocationHead(ctx.knex), result.serials);
      if (audited !== undefined) {
        out(`revocation list BROKEN: ${audited}`);
        return 1;
      }
      out(
        `revocation list intact: ${result.length} revocation(s), chain and sealed head verified under the master key`,
      );
      return 0;
    }
    default:
      throw new UsageError('mtls init-ca | issue | register | list | revoke | revocations verify');
  }
}

async function issue(
  args: readonly string[],
  ca: ClientCertificateAuthority,
  out: (t: string) => void,
): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: {
      client: { type: 'string' },
      scopes: { type: 'string' },
      days: { type: 'string' },
      out: { type: 'string' },
      csr: { type: 'string' },
      'password-file': { type: 'string' },
      'password-out': { type: 'string' },
    },
    strict: true,
  });
  if (values.client === undefined || values.scopes === undefined || values.out === undefined) {
    throw new UsageError('mtls issue needs --client, --scopes and --out');
  }
  const passwordFile = values['password-file'];
  const passwordOut = values['password-out'];
  if (values.csr !== undefined && (passwordFile !== undefined || passwordOut !== undefined)) {
    throw new UsageError('--password-file and --password-out are for bundles; with --csr the key stays on the device');
  }
  if (values.csr === undefined && (passwordFile === undefined) === (passwordOut === undefined)) {
    throw new UsageError(
      'mtls issue (bundle) needs exactly one of --password-out <new file> (a generated password, written with mode 0600) or --password-file <file>',
    );
  }
  if (passwordOut !== undefined && fs.existsSync(passwordOut)) {
    throw new UsageError(`${passwordOut} exists: --password-out writes a new file only`);
  }
  if (values.days !== undefined && !/^[1-9]\d{0,3}$/.test(values.days)) {
    throw new UsageError('--days must be a positive whole number');
  }
  // Refuse to overwrite: a bundle holds a private key, and an earlier one may still be installed.
  if (fs.existsSync(values.out)) throw new UsageError(`${values.out} exists: choose another --out`);
  const csrPem = values.csr === undefined ? undefined : fs.readFileSync(values.csr, 'utf8');
  const password =
    values.csr !== undefined
      ? undefined
      : passwordFile !== undefined
        ? fs.readFileSync(passwordFile, 'utf8').replace(/\r?\n$/, '')
        : randomBytes(24).toString('base64url');
  const issued = await ca.issue({
    client: values.client,
    scopes: scopesOf(values.scopes),
    days: values.days === undefined ? DEFAULT_DAYS : Number(values.days),
    csrPem,
    password,
  });
  if (issued.pkcs12 !== undefined) {
    if (passwordOut !== undefined) {
      // 'wx': created here or not at all (an existing file or a link planted since the check is refused).
      fs.writeFileSync(passwordOut, `${password ?? ''}\n`, { mode: 0o600, flag: 'wx' });
      fs.chmodSync(passwordOut, 0o600); // exactly 0600, whatever the umask took away
      out(`wrote ${passwordOut}: the bundle password (mode 0600; hand it over apart from the bundle, then delete it)`);
    }
    fs.writeFileSync(values.out, issued.pkcs12, { mode: 0o600, flag: 'wx' });
    out(`wrote ${values.out}: PKCS#12 (key, certificate, CA certificate; AES-256, PBKDF2-HMAC-SHA256)`);
  } else {
    fs.writeFileSync(values.out, `${issued.certificatePem}${issued.caCertificatePem}`, { flag: 'wx' });
    out(`wrote ${values.out}: the certificate for the CSR's key, then the CA certificate`);
  }
  out(describe(issued.record));
  return 0;
}

function scopesOf(list: string): string[] {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

function describe(r: ClientCertificateRecord): string {
  return (
    `${r.serial}  ${r.clientName}  scopes ${r.scopes.join(',')}  ` +
    `valid ${r.notBefore.toISOString()} .. ${r.notAfter.toISOString()}  CA v${r.caVersion ?? 'external'}  ` +
    `sha256 ${r.fingerprint}` +
    (r.revokedAt === null
      ? ''
      : `  REVOKED ${r.revokedAt.toISOString()} by ${r.revokedBy ?? '?'}: ${r.revocationReason ?? ''}`)
  );
}
