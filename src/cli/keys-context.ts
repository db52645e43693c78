/** What every key command is given: the open database, the master key, the ring, the policy, who acts. */
import type { Knex } from 'knex';
import type { AppError } from '../errors/app-error.js';
import type { KeyActor } from '../auth/actors.js';
import type { EncryptedFieldSet } from '../keys/field-sets.js';
import type { KeyPolicy } from '../keys/key-manager.js';
import type { KeyRing } from '../keys/key-ring.js';
import type { MasterKeySource } from '../keys/master-key-types.js';
import type { TokenKeyCreated } from '../keys/master-key-sources/pkcs11.js';

export interface KeysContext {
  readonly knex: Knex;
  readonly databaseKind: 'postgres' | 'pglite';
  readonly databaseDescription: string;
  readonly masterKey: MasterKeySource;
  readonly ring: KeyRing;
  readonly policy: KeyPolicy;
  readonly registry: readonly EncryptedFieldSet[];
  readonly actor: KeyActor;
  /** TLS_CLIENT_CA's certificates (PEM bundle): `mtls register` accepts certificates they issued. */
  readonly externalClientCaPem?: string | undefined;
  /** Set by keys.ts when `hsm init` has just created the master key in the token: the command audits it. */
  readonly tokenKeyCreated?: TokenKeyCreated | undefined;
  /** Set by keys.ts when the token refused `hsm init` (the label exists): the command throws it, audited. */
  readonly tokenKeyRefusal?: AppError | undefined;
}

export interface KeysIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly isTTY: boolean;
  /** Set on Ctrl-C: a running backfill stops after its batches in flight. */
  readonly interrupted?: () => boolean;
  /** Asks the person at the terminal (absent without one): `approve` signs only after a yes. */
  readonly confirm?: ((question: string) => Promise<boolean>) | undefined;
}
