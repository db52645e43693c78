/**
 * Instances acknowledge the key ring: each live service instance keeps one row in
 * `key_ring_instances` with the `key_ring_generation` its ring has loaded, beating every refresh
 * interval (and at once after every reload), on the database clock. The key CLI reads these rows
 * before it activates, retires or destroys a version ({@link waitForInstances}).
 *
 * - Live: the last beat is younger than twice the instance's refresh interval plus a grace
 *   ({@link HEARTBEAT_GRACE_MS}). An instance that stops beating (killed, frozen, cut off from the
 *   database) is no longer waited for once it expires: while it cannot reach the database it cannot
 *   write either, and if it comes back its first beat makes it live again and every write it attempts
 *   is still checked against the key state by the database (migration 20261206000700).
 * - A graceful stop deletes the row.
 * - Prompt acknowledgement: every bump of the generation notifies channel `key_ring_generation`
 *   (trigger of migration 20261206000700); an instance listening on it refreshes its ring at once, so a
 *   fleet with long refresh intervals catches up in milliseconds. A notification can be lost (the
 *   listening connection drops); the refresh interval stays the bound, and the CLI waits for the
 *   acknowledgement itself, never for the notification.
 *
 * The generation is the database's own counter, bumped in the same transaction as every key-state
 * change (key-ring.ts, bumpGeneration), so "has loaded generation g" means "has seen every key state
 * up to that change".
 */
import os from 'node:os';
import type { Knex } from 'knex';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import type { KeyRing } from './key-ring.js';
import { deleteInstance, futureBeatRows, liveInstanceRows, recordBeat, type InstanceRow } from './instance-store.js';
import { readGeneration } from './key-version-store.js';

type Db = Knex | Knex.Transaction;

/** Beyond twice its refresh interval, how long an instance's silence is tolerated before it expires. */
export const HEARTBEAT_GRACE_MS = 5_000;

export interface LiveInstance {
  readonly instanceId: string;
  readonly host: string;
  readonly pid: number;
  readonly startedAt: Date;
  readonly generation: number;
  readonly refreshIntervalMs: number;
  readonly lastBeatAt: Date;
  /** Seconds since its last beat, on the database clock. */
  readonly secondsSinceBeat: number;
}

/**
 * How far ahead of the database clock a beat may be and still count (every beat is stamped with the
 * database's now(), so only a forged or hand-edited row is ahead at all).
 */
export const HEARTBEAT_FUTURE_SKEW_MS = 5_000;

/**
 * Instances whose heartbeat has not expired, by id. A beat dated ahead of the database clock (beyond
 * {@link HEARTBEAT_FUTURE_SKEW_MS}) is not a live instance: it is ignored here and listed by
 * {@link futureBeats}, so a forged row cannot hold key operations for decades.
 */
export async function liveInstances(db: Db, graceMs: number = HEARTBEAT_GRACE_MS): Promise<LiveInstance[]> {
  return (await liveInstanceRows(db, graceMs, HEARTBEAT_FUTURE_SKEW_MS)).map(toLiveInstance);
}

/** Heartbeat rows dated ahead of the database clock beyond the skew: forged or hand-edited, ignored. */
export async function futureBeats(db: Db): Promise<LiveInstance[]> {
  return (await futureBeatRows(db, HEARTBEAT_FUTURE_SKEW_MS)).map(toLiveInstance);
}

function toLiveInstance(r: InstanceRow): LiveInstance {
  return {
    instanceId: r.instance_id,
    host: r.host,
    pid: r.pid,
    startedAt: r.started_at,
    generation: Number(r.generation),
    refreshIntervalMs: r.refresh_interval_ms,
    lastBeatAt: r.last_beat_at,
    secondsSinceBeat: Number(r.since),
  };
}

/** The current `key_ring_generation`. */
export function currentGeneration(db: Db): Promise<number> {
  return readGeneration(db);
}

export interface HeartbeatOptions {
  readonly host?: string;
  readonly pid?: number;
  /** Told when a beat fails (the next one tries again). */
  readonly onError?: (error: unknown) => void;
  /** Listen for generation bumps (default true); false leaves only the refresh interval. */
  readonly listen?: boolean;
}

/** The notification channel of generation bumps. */
export const GENERATION_CHANNEL = 'key_ring_generation';

interface NotifyConnection {
  on(event: 'notification' | 'error', listener: (arg: unknown) => void): void;
  query(sql: string): Promise<unknown>;
}

interface ListeningClient {
  readonly config: { readonly client?: unknown };
  readonly pglite?: { listen(channel: string, callback: () => void): Promise<() => Promise<void>> };
  acquireRawConnection(): Promise<NotifyConnection>;
  destroyRawConnection(connection: NotifyConnection): Promise<void>;
}

/** One service instance's heartbeat. `start` after the ring's first load; `stop` on graceful shutdown. */
export class InstanceHeartbeat {
  readonly instanceId = newId('ins');
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private beating: Promise<void> = Promise.resolve();
  private readonly startedAt = new Date();
  private unlisten: (() => Promise<void>) | undefined;

  constructor(
    private readonly knex: Knex,
    private readonly ring: KeyRing,
    private readonly options: HeartbeatOptions = {},
  ) {}

  async start(): Promise<void> {
    // Every reload is acknowledged at once: the CLI waiting for it need not wait a whole interval.
    this.ring.onLoad(() => {
      if (!this.stopped) void this.beat().catch((error: unknown) => this.options.onError?.(error));
    });
    await this.beat();
    await this.listen();
    this.schedule();
  }

  /** Records the generation the ring has loaded now. Beats run one at a time, in order. */
  beat(): Promise<void> {
    const next = this.beating.then(async () => {
      if (this.stopped || this.ring.loadedGeneration < 0) return;
      await recordBeat(this.knex, {
        instanceId: this.instanceId,
        host: this.options.host ?? os.hostname(),
        pid: this.options.pid ?? process.pid,
        startedAt: this.startedAt,
        generation: this.ring.loadedGeneration,
        refreshIntervalMs: this.ring.refreshInterval,
      });
    });
    this.beating = next.catch(() => undefined);
    return next;
  }

  /**
   * Removes the row while going on (the vault was sealed and its ring dropped): the CLI no longer
   * waits for this instance; the next load after an unseal beats again.
   */
  async withdraw(): Promise<void> {
    await this.beating;
    await deleteInstance(this.knex, this.instanceId);
  }

  /** Stops beating and removes the row: the CLI no longer waits for this instance. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    const unlisten = this.unlisten;
    this.unlisten = undefined;
    await unlisten?.().catch(() => undefined);
    await this.beating;
    await deleteInstance(this.knex, this.instanceId);
  }

  /** Subscribes to generation bumps, on a connection of its own (PostgreSQL) or the PGlite instance. */
  private async listen(): Promise<void> {
    if (this.options.listen === false || this.unlisten !== undefined || this.stopped) return;
    const onBump = (): void => {
      if (!this.stopped) void this.ring.refresh().catch((error: unknown) => this.options.onError?.(error));
    };
    const client = this.knex.client as unknown as ListeningClient;
    try {
      if (client.pglite !== undefined) {
        this.unlisten = await client.pglite.listen(GENERATION_CHANNEL, onBump);
      } else if (client.config.client === 'pg') {
        const connection = await client.acquireRawConnection();
        connection.on('notification', onBump);
        // A dropped connection: back to the refresh interval; the next timer tick listens again.
        connection.on('error', (error) => {
          this.unlisten = undefined;
          this.options.onError?.(error);
        });
        await connection.query(`listen ${GENERATION_CHANNEL}`);
        this.unlisten = () => client.destroyRawConnection(connection);
      }
    } catch (error) {
      this.options.onError?.(error);
    }
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      // A quiet instance still refreshes: its ring is checked on this timer, not only by traffic.
      this.listen()
        .then(() => this.ring.refresh())
        .then(() => this.beat())
        .catch((error: unknown) => this.options.onError?.(error))
        .finally(() => {
          if (!this.stopped) this.schedule();
        });
    }, this.ring.refreshInterval);
    this.timer.unref();
  }
}

export interface WaitOptions {
  /** Gives up after this long, naming the instances still behind. */
  readonly timeoutMs: number;
  readonly pollMs?: number;
  /** Told which instances it waits for (id, host, generation, last beat) and for how long. */
  readonly onWait?: (message: string) => void;
  readonly sleep?: (ms: number) => Promise<void>;
}

/**
 * Waits until every live instance has loaded generation `target` or later; instances that expire
 * meanwhile are no longer waited for. Throws KEY_INSTANCES_BEHIND after `timeoutMs`, with the
 * instances still behind in its extensions. Returns how long it waited.
 */
export async function waitForInstances(knex: Knex, target: number, options: WaitOptions): Promise<number> {
  const started = Date.now();
  const pollMs = options.pollMs ?? 250;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  let lastReport = '';
  let lastReportAt = 0;
  const ignored = await futureBeats(knex);
  if (ignored.length > 0) {
    options.onWait?.(
      `ignoring ${ignored.length} heartbeat row(s) dated in the future (forged or hand-edited; to remove them ` +
        `see docs/key-management.md): ${ignored.map(describeInstance).join('; ')}`,
    );
  }
  for (;;) {
    const behind = (await liveInstances(knex)).filter((i) => i.generation < target);
    const waited = Date.now() - started;
    if (behind.length === 0) {
      if (lastReport !== '')
        options.onWait?.(`every live instance has loaded generation ${target} (waited ${seconds(waited)})`);
      return waited;
    }
    const report = behind.map(describeInstance).join('; ');
    if (report !== lastReport || Date.now() - lastReportAt >= 5_000) {
      options.onWait?.(
        `waiting ${seconds(waited)} (timeout ${seconds(options.timeoutMs)}) for ${behind.length} instance(s) to load generation ${target}: ${report}`,
      );
      lastReport = report;
      lastReportAt = Date.now();
    }
    if (waited >= options.timeoutMs) {
      throw new AppError('KEY_INSTANCES_BEHIND', {
        detail:
          `after ${seconds(waited)}, ${behind.length} live instance(s) have not loaded generation ${target}: ${report}. ` +
          'Check them (or wait for a stopped one to expire), then run the command again.',
        extensions: {
          generation: target,
          waitedSeconds: Math.round(waited / 1000),
          instances: behind.map((i) => ({
            instanceId: i.instanceId,
            host: i.host,
            pid: i.pid,
            generation: i.generation,
            lastBeatAt: i.lastBeatAt.toISOString(),
          })),
        },
      });
    }
    await sleep(pollMs);
  }
}

export function describeInstance(i: LiveInstance): string {
  return (
    `${i.instanceId} on ${i.host} (pid ${i.pid}) holds generation ${i.generation}, ` +
    (i.secondsSinceBeat < 0
      ? `last beat ${(-i.secondsSinceBeat).toFixed(1)} s IN THE FUTURE (ahead of the database clock: a forged or hand-edited row)`
      : `last beat ${i.secondsSinceBeat.toFixed(1)} s ago`) +
    `, refreshes every ${seconds(i.refreshIntervalMs)}`
  );
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}
