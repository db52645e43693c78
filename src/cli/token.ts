/**
 * DEVELOPMENT ONLY: prints a bearer token that the embedded default trusts.
 *
 *   npm run token -- --scope "tokens:read tokens:write" [--shopper shp_…] [--subject name] [--ttl 3600]
 */
import { parseArgs } from 'node:util';
import { loadConfig, type Config } from '../config/config.js';
import { loadDevIssuer } from '../auth/dev-issuer.js';
import { isShopperRef } from '../ids/prefixed-id.js';
import { asksForHelp, EXIT_USAGE, isUsageError } from './cli-args.js';

const USAGE = `usage: npm run token -- --scope "<scope> …" [--shopper shp_…] [--subject <name>] [--ttl <seconds>]

  DEVELOPMENT ONLY: prints a bearer token that the embedded default trusts.
  --scope     scopes, space- or comma-separated, repeatable (tokens:write, loyalty:read, …)
  --shopper   a shopper reference: the token reaches only that shopper
  --subject   the token's sub (default dev-user)
  --ttl       lifetime, 1 to 86400 seconds (default 3600)
  -h, --help  this text (touches nothing)
`;

export interface TokenRequest {
  readonly scopes: readonly string[];
  readonly shopperRef?: string | undefined;
  readonly subject: string;
  readonly ttlSeconds: number;
}

export function parseTokenArgs(argv: readonly string[]): TokenRequest {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      scope: { type: 'string', multiple: true, default: [] },
      shopper: { type: 'string' },
      subject: { type: 'string', default: 'dev-user' },
      ttl: { type: 'string', default: '3600' },
    },
    strict: true,
  });
  const ttlSeconds = Number(values.ttl);
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > 86_400)
    throw new Error('--ttl must be 1 to 86400 seconds');
  if (values.shopper !== undefined && !isShopperRef(values.shopper))
    throw new Error('--shopper must be a shopper reference (shp_…)');
  return {
    scopes: values.scope.flatMap((s) => s.split(/[\s,]+/)).filter((s) => s.length > 0),
    shopperRef: values.shopper,
    subject: values.subject,
    ttlSeconds,
  };
}

export async function issueDevToken(config: Config, request: TokenRequest): Promise<string> {
  if (config.auth.keys.source !== 'dev-issuer' || config.nodeEnv === 'production') {
    throw new Error(
      'this configuration does not trust the development issuer (AUTH_JWKS_URL or AUTH_PUBLIC_KEYS is set)',
    );
  }
  const issuer = await loadDevIssuer(config.auth.keys.file);
  return issuer.sign({ issuer: config.auth.issuer, audience: config.auth.audience, ...request });
}

if (import.meta.url === `file://${process.argv[1] ?? ''}`) {
  const argv = process.argv.slice(2);
  if (asksForHelp(argv)) {
    process.stdout.write(USAGE);
  } else {
    try {
      const request = parseTokenArgs(argv); // before the data folder's issuer key is read or made
      const token = await issueDevToken(loadConfig(), request);
      process.stdout.write(`${token}\n`);
    } catch (error) {
      process.stderr.write(`token: ${error instanceof Error ? error.message : String(error)}\n`);
      if (isUsageError(error)) process.stderr.write(`\n${USAGE}`);
      process.exitCode = EXIT_USAGE;
    }
  }
}
