/**
 * DEVELOPMENT ONLY: prints a bearer token that the embedded default trusts.
 *
 *   npm run token -- --scope "tokens:read tokens:write" [--shopper shp_…] [--subject name] [--ttl 3600]
 *
 * Scopes are checked against the ones the contract's operations ask for (openapi.yaml).
 */
import type { Command } from 'commander';
import { loadConfig, type Config } from '../config/config.js';
import { loadDevIssuer } from '../auth/dev-issuer.js';
import { bearerScopes } from '../http/openapi.js';
import { isShopperRef } from '../ids/prefixed-id.js';
import { cliProgram, isMain, onRun, runProgram } from './cli-program.js';
import { UsageError } from './usage-error.js';

export interface TokenRequest {
  readonly scopes: readonly string[];
  readonly shopperRef?: string | undefined;
  readonly subject: string;
  readonly ttlSeconds: number;
}

interface TokenOptions {
  readonly scope?: string[];
  readonly shopper?: string;
  readonly subject: string;
  readonly ttl: string;
}

/** The token CLI: its options and help; `tokenProgram` adds what it runs. */
function tokenCommandLine(): Command {
  const program = cliProgram({
    name: 'token',
    invocation: 'npm run token --',
    description:
      'DEVELOPMENT ONLY: prints a bearer token that the embedded default trusts (signed with the development ' +
      "issuer's key in DATA_DIR, made on first use).",
    env: ['DATA_DIR', 'NODE_ENV', 'AUTH_ISSUER', 'AUTH_AUDIENCE', 'AUTH_JWKS_URL', 'AUTH_PUBLIC_KEYS'],
    exitCodes: {
      0: 'the token is on stdout',
      1: 'refused: this configuration does not trust the development issuer',
      2: 'bad usage (unknown option, unknown scope, bad --ttl or --shopper): nothing is read or made',
    },
    details: `Known scopes: ${bearerScopes().join(', ')}`,
  });
  program
    .option(
      '--scope <scopes>',
      'scopes, space- or comma-separated, repeatable (tokens:write, loyalty:read, …)',
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    )
    .option('--shopper <shp_…>', 'a shopper reference: the token reaches only that shopper')
    .option('--subject <name>', "the token's sub", 'dev-user')
    .option('--ttl <seconds>', 'lifetime, 1 to 86400 seconds', '3600');
  return program;
}

/** The token CLI; `issue` runs with the checked request (the default prints a token). */
export function tokenProgram(issue: (request: TokenRequest) => Promise<number> = printToken): Command {
  return onRun(tokenCommandLine(), (command) => issue(tokenRequest(command.opts<TokenOptions>())));
}

function tokenRequest(values: TokenOptions): TokenRequest {
  const ttlSeconds = Number(values.ttl);
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > 86_400)
    throw new UsageError('--ttl must be 1 to 86400 seconds');
  if (values.shopper !== undefined && !isShopperRef(values.shopper))
    throw new UsageError('--shopper must be a shopper reference (shp_…)');
  const scopes = (values.scope ?? []).flatMap((s) => s.split(/[\s,]+/)).filter((s) => s.length > 0);
  const known = bearerScopes();
  const unknown = scopes.filter((s) => !known.includes(s));
  if (unknown.length > 0) {
    throw new UsageError(`unknown scope ${unknown.join(', ')}; known scopes: ${known.join(', ')}`);
  }
  return { scopes, shopperRef: values.shopper, subject: values.subject, ttlSeconds };
}

/** The request the command line asks for; throws a usage error (commander's or a UsageError). */
export function parseTokenArgs(argv: readonly string[]): TokenRequest {
  const program = tokenCommandLine();
  program.parse([...argv], { from: 'user' });
  return tokenRequest(program.opts<TokenOptions>());
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

async function printToken(request: TokenRequest): Promise<number> {
  // The request is checked before the data folder's issuer key is read or made.
  const token = await issueDevToken(loadConfig(), request);
  process.stdout.write(`${token}\n`);
  return 0;
}

if (isMain(import.meta.url)) {
  process.exitCode = await runProgram(tokenProgram(), process.argv.slice(2));
}
