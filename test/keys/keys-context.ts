/**
 * Test wiring for the key CLI: the commands run in-process against the test's own database (the only
 * way on in-memory PGlite), with their output captured.
 */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import type { Knex } from 'knex';
import { runKeysCommand, type KeysContext } from '../../src/cli/keys-commands.js';
import { builtInFieldSets } from '../../src/encrypted-field-sets.js';
import { clientCaHooks } from '../../src/mtls/client-ca-hooks.js';
import { DEFAULT_CRYPTOPERIOD_DAYS, KeyRing, type KeyActor } from '../../src/keys/key-ring.js';
import { KeyManager, type KeyPolicy } from '../../src/keys/key-manager.js';
import { LocalMasterKey, type MasterKeySource } from '../../src/keys/master-key-source.js';
import { liveClientCertificates } from '../../src/mtls/client-certificate-records.js';
import type { TestDatabase } from '../support/database.js';

export const OPERATOR: KeyActor = { actor: 'test-operator', actorType: 'operator', origin: 'cli:test' };

export interface KeysFixture {
  readonly ctx: KeysContext;
  readonly masterKeyBase64: string;
  readonly masterKey: LocalMasterKey;
  readonly ring: KeyRing;
  run(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** As run, with a terminal that answers `confirm` (what the person at the keyboard types). */
  runAt(
    confirm: (question: string) => Promise<boolean>,
    ...argv: string[]
  ): Promise<{ code: number; stdout: string; stderr: string }>;
  manager(): KeyManager;
}

export function defaultPolicy(overrides: Partial<KeyPolicy> = {}): KeyPolicy {
  return {
    singleOperator: false,
    production: false,
    cryptoperiodDays: DEFAULT_CRYPTOPERIOD_DAYS,
    propagationMs: 300,
    ...overrides,
  };
}

export async function keysFixture(
  db: TestDatabase,
  options: {
    policy?: Partial<KeyPolicy>;
    masterKeyBase64?: string;
    /** Another master key source (a master-key rotation's current + previous keys). */
    source?: MasterKeySource;
    refreshMs?: number;
    knex?: Knex;
    /** TLS_CLIENT_CA's certificates, for `mtls register`. */
    externalClientCaPem?: string;
  } = {},
): Promise<KeysFixture> {
  const masterKeyBase64 = options.masterKeyBase64 ?? randomBytes(32).toString('base64');
  const masterKey = new LocalMasterKey(Buffer.from(masterKeyBase64, 'base64'), 'test master key');
  const knex = options.knex ?? db.knex;
  const source = options.source ?? masterKey;
  const ring = new KeyRing(knex, source, options.refreshMs ?? 50);
  await ring.ensureInitialKeys('test');
  const ctx: KeysContext = {
    knex,
    databaseKind: db.url === undefined ? 'pglite' : 'postgres',
    databaseDescription: 'test database',
    masterKey: source,
    ring,
    policy: defaultPolicy(options.policy),
    registry: [...builtInFieldSets, liveClientCertificates],
    actor: OPERATOR,
    externalClientCaPem: options.externalClientCaPem,
  };
  return {
    ctx,
    masterKeyBase64,
    masterKey,
    ring,
    async run(...argv) {
      const stdout = capture();
      const stderr = capture();
      const code = await runKeysCommand(argv, ctx, { stdout: stdout.stream, stderr: stderr.stream, isTTY: false });
      return { code, stdout: stdout.text(), stderr: stderr.text() };
    },
    async runAt(confirm, ...argv) {
      const stdout = capture();
      const stderr = capture();
      const io = { stdout: stdout.stream, stderr: stderr.stream, isTTY: true, confirm };
      const code = await runKeysCommand(argv, ctx, io);
      return { code, stdout: stdout.text(), stderr: stderr.text() };
    },
    manager: () =>
      new KeyManager({
        knex,
        ring,
        masterKey: source,
        registry: ctx.registry,
        clientCa: clientCaHooks,
        policy: ctx.policy,
        actor: OPERATOR,
      }),
  };
}

function capture(): { stream: Writable; text(): string } {
  const chunks: string[] = [];
  return {
    stream: new Writable({
      write(chunk: Buffer | string, _enc, cb) {
        chunks.push(chunk.toString());
        cb();
      },
    }),
    text: () => chunks.join(''),
  };
}
