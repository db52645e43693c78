/**
 * Custodians for the dual-control tests: Ed25519 key pairs in files (as a custodian keeps them), the
 * genesis ceremony of the first two, requests and approvals through the CLI.
 */
import { expect } from 'chai';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { KeysFixture } from './keys-context.js';

export interface Person {
  readonly name: string;
  readonly publicKey: string;
  readonly privateKey: string;
}

export function ed25519(dir: string, name: string): Person {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const person = {
    name,
    publicKey: path.join(dir, `${name}.pub.pem`),
    privateKey: path.join(dir, `${name}.pem`),
  };
  fs.writeFileSync(person.publicKey, publicKey.export({ format: 'pem', type: 'spki' }));
  fs.writeFileSync(person.privateKey, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  return person;
}

/** `keys request …`: the id it prints, or a failed expectation with its stderr. */
export async function requestId(fx: KeysFixture, ...args: string[]): Promise<string> {
  const created = await fx.run('request', ...args);
  expect(created.code, created.stderr).to.equal(0);
  const id = /request (krq_[a-z2-7]+)/.exec(created.stdout)?.[1];
  expect(id).to.be.a('string');
  return id!;
}

/** `keys approve <id> --key <pem> --yes` (a script: no terminal). */
export const approve = (fx: KeysFixture, id: string, who: Person) =>
  fx.run('approve', id, '--key', who.privateKey, '--yes');

/** The genesis ceremony: one request naming both, each signs it, then it is completed. */
export async function genesis(fx: KeysFixture, first: Person, second: Person): Promise<string> {
  const id = await requestId(
    fx,
    'genesis',
    '--name',
    first.name,
    '--public-key',
    first.publicKey,
    '--name',
    second.name,
    '--public-key',
    second.publicKey,
  );
  for (const who of [first, second]) {
    const signed = await approve(fx, id, who);
    expect(signed.code, signed.stderr).to.equal(0);
  }
  const done = await fx.run('custodian', 'genesis', '--request', id);
  expect(done.code, done.stderr).to.equal(0);
  return id;
}

/**
 * Three custodians, as the key-shares tests start: alice and bob by genesis, carol added by a request
 * both approved. The key files are written into `dir`.
 */
export async function threeCustodians(fx: KeysFixture, dir: string): Promise<[Person, Person, Person]> {
  const [alice, bob, carol] = ['alice', 'bob', 'carol'].map((n) => ed25519(dir, n)) as [Person, Person, Person];
  await genesis(fx, alice, bob);
  const add = await requestId(fx, 'add-custodian', '--name', 'carol', '--public-key', carol.publicKey);
  for (const who of [alice, bob]) expect((await approve(fx, add, who)).code).to.equal(0);
  const added = await fx.run(
    'custodian',
    'add',
    '--name',
    'carol',
    '--public-key',
    carol.publicKey,
    '--acknowledge',
    '--request',
    add,
  );
  expect(added.code, added.stderr).to.equal(0);
  return [alice, bob, carol];
}
