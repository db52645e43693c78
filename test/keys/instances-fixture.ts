/**
 * Service instances for the issue-18 tests: each its own key ring, vault and (optionally) heartbeat on
 * a database handle of its choosing, and a till tokenising through it until told to stop.
 */
import type { Knex } from 'knex';
import { VaultService } from '../../src/cards/vault-service.js';
import { InstanceHeartbeat } from '../../src/keys/instance-heartbeat.js';
import { KeyRing } from '../../src/keys/key-ring.js';
import type { MasterKeySource } from '../../src/keys/master-key-source.js';
import { generatePans } from '../support/pans.js';

export interface Instance {
  readonly name: string;
  readonly ring: KeyRing;
  readonly vault: VaultService;
  readonly heartbeat: InstanceHeartbeat | undefined;
}

export interface Traffic {
  readonly tokens: string[];
  errors: string[];
  paused: boolean;
  stop: boolean;
  done: Promise<void>;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The instances and tills a test file started, stopped in its `after`. */
export class Fleet {
  readonly started: Instance[] = [];
  readonly traffics: Traffic[] = [];

  constructor(private readonly masterKey: MasterKeySource) {}

  /**
   * An instance whose ring refreshes every `refreshMs`. `heartbeat` null: no heartbeat at all (no
   * row, no timer, no LISTEN); not `undefined`, which takes the default (a listening heartbeat).
   */
  async start(
    name: string,
    knex: Knex,
    refreshMs: number,
    heartbeat: { listen: boolean } | null = { listen: true },
  ): Promise<Instance> {
    const ring = new KeyRing(knex, this.masterKey, refreshMs);
    await ring.reload();
    const vault = new VaultService(knex, ring, { detokenise: { enabled: true, perMinute: 1_000_000 } });
    let beat: InstanceHeartbeat | undefined;
    if (heartbeat !== null) {
      beat = new InstanceHeartbeat(knex, ring, { host: `host-${name}`, listen: heartbeat.listen });
      await beat.start();
    }
    const instance = { name, ring, vault, heartbeat: beat };
    this.started.push(instance);
    return instance;
  }

  /** A till tokenising a new card through `instance` every few milliseconds. */
  traffic(instance: Instance): Traffic {
    const t: Traffic = { tokens: [], errors: [], paused: false, stop: false, done: Promise.resolve() };
    t.done = (async () => {
      while (!t.stop) {
        if (t.paused) {
          await sleep(20);
          continue;
        }
        const [pan] = generatePans(1, '400000');
        try {
          const { card } = await instance.vault.tokenise({ kind: 'pan', pan: pan as string });
          t.tokens.push(card.token);
        } catch (error) {
          t.errors.push(`${instance.name}: ${(error as Error).message}`);
        }
        await sleep(5);
      }
    })();
    this.traffics.push(t);
    return t;
  }

  async stopAll(): Promise<void> {
    for (const t of this.traffics) t.stop = true;
    await Promise.all(this.traffics.map((t) => t.done));
    for (const i of this.started) await i.heartbeat?.stop().catch(() => undefined);
  }
}
