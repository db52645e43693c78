/**
 * The suite's in-memory PGlite databases start from a data folder made once per process instead of
 * each running initdb (and, when asked, the migrations): the WebAssembly modules are compiled once,
 * initdb runs once, the migrations run once more on top, and every new database loads one of those
 * two folders (about 0.4 s instead of 2–3 s; the embedded pass creates well over a hundred). Each
 * database is still its own PGlite instance: no test sees another's rows.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { createMemoryDatabase, type MemoryDatabaseStart } from '../../src/db/database.js';
import { migrateToLatest } from '../../src/db/migrations.js';

type WasmModule = NonNullable<MemoryDatabaseStart['pgliteWasmModule']>;
// Node's global, absent from the ES library types this project compiles with (no DOM).
declare const WebAssembly: { compile(bytes: Uint8Array): Promise<WasmModule> };

let blank: Promise<MemoryDatabaseStart> | undefined;
let migrated: Promise<MemoryDatabaseStart> | undefined;

/** A cluster as initdb leaves it. */
export function blankClusterStart(): Promise<MemoryDatabaseStart> {
  blank ??= prepareBlank();
  return blank;
}

/** A cluster with every migration applied, as `migrateToLatest` leaves a blank one. */
export function migratedClusterStart(): Promise<MemoryDatabaseStart> {
  migrated ??= prepareMigrated();
  return migrated;
}

async function prepareBlank(): Promise<MemoryDatabaseStart> {
  const dist = path.dirname(createRequire(import.meta.url).resolve('@electric-sql/pglite'));
  const [pgliteWasmModule, initdbWasmModule] = await Promise.all(
    ['pglite.wasm', 'initdb.wasm'].map((file) => WebAssembly.compile(fs.readFileSync(path.join(dist, file)))),
  );
  const fsBundle = new Blob([fs.readFileSync(path.join(dist, 'pglite.data'))]);
  const modules = { pgliteWasmModule, initdbWasmModule, fsBundle };
  const cluster = new PGlite(modules);
  try {
    await cluster.waitReady;
    return { ...modules, loadDataDir: await cluster.dumpDataDir('none') };
  } finally {
    await cluster.close();
  }
}

async function prepareMigrated(): Promise<MemoryDatabaseStart> {
  const start = await blankClusterStart();
  const db = createMemoryDatabase(start);
  try {
    await migrateToLatest(db.knex);
    return { ...start, loadDataDir: await (db.pglite as PGlite).dumpDataDir('none') };
  } finally {
    await db.close();
  }
}
