import { expect } from 'chai';
import { GroupCommit } from '../../src/db/group-commit.js';

interface Item {
  readonly key: string;
  readonly value: number;
}

/** A run function whose batches finish only when the test says so. */
function gatedRun() {
  const batches: Item[][] = [];
  const gates: (() => void)[] = [];
  const failing = new Set<number>();
  const apply = async (_tx: unknown, items: readonly Item[]): Promise<number[]> => {
    batches.push([...items]);
    await new Promise<void>((resolve) => gates.push(resolve));
    if (items.some((i) => failing.has(i.value))) throw new Error('batch rolled back');
    return items.map((i) => i.value * 10);
  };
  const openAll = async () => {
    for (let turn = 0; turn < 100 && gates.length > 0; turn++) {
      gates.splice(0).forEach((open) => open());
      await new Promise((resolve) => setImmediate(resolve));
    }
  };
  const transact = <X>(work: (tx: unknown) => Promise<X>): Promise<X> => work(undefined);
  return { transact, apply, batches, gates, failing, openAll };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('group commit', () => {
  it('when the service is quiet, then a submission runs at once, alone', async () => {
    const g = gatedRun();
    const group = new GroupCommit(g.transact, g.apply, { maxBatch: 10, concurrency: 1, keyOf: (i: Item) => i.key });
    const result = group.submit({ key: 'a', value: 1 });
    await tick();
    expect(g.batches).to.deep.equal([[{ key: 'a', value: 1 }]]);
    await g.openAll();
    expect(await result).to.equal(10);
  });

  it('when submissions arrive while a batch runs, then the next batch takes them together, in order, up to maxBatch', async () => {
    const g = gatedRun();
    const sizes: number[] = [];
    const group = new GroupCommit(g.transact, g.apply, {
      maxBatch: 3,
      concurrency: 1,
      keyOf: (i: Item) => i.key,
      onBatch: (n) => sizes.push(n),
    });
    const results = [1, 2, 3, 4, 5].map((value) => group.submit({ key: `k${value}`, value }));
    await tick();
    await g.openAll();
    expect(await Promise.all(results)).to.deep.equal([10, 20, 30, 40, 50]);
    expect(g.batches.map((b) => b.map((i) => i.value))).to.deep.equal([[1], [2, 3, 4], [5]]);
    expect(sizes).to.deep.equal([1, 3, 1]);
  });

  it('when two items share a key, then they never share a batch and keep their order', async () => {
    const g = gatedRun();
    const group = new GroupCommit(g.transact, g.apply, { maxBatch: 10, concurrency: 1, keyOf: (i: Item) => i.key });
    const results = [
      group.submit({ key: 'x', value: 1 }),
      group.submit({ key: 'p', value: 2 }),
      group.submit({ key: 'p', value: 3 }),
      group.submit({ key: 'q', value: 4 }),
      group.submit({ key: 'p', value: 5 }),
    ];
    await tick();
    await g.openAll();
    await Promise.all(results);
    expect(g.batches.map((b) => b.map((i) => i.value))).to.deep.equal([[1], [2, 4], [3], [5]]);
  });

  it('when a batch fails, then each item runs again alone and only the bad one fails', async () => {
    const g = gatedRun();
    g.failing.add(3);
    const group = new GroupCommit(g.transact, g.apply, { maxBatch: 10, concurrency: 1, keyOf: (i: Item) => i.key });
    const settling = Promise.allSettled([1, 2, 3, 4].map((value) => group.submit({ key: `k${value}`, value })));
    await tick();
    await g.openAll();
    const settled = await settling;
    expect(settled.map((s) => s.status)).to.deep.equal(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect(g.batches.map((b) => b.map((i) => i.value))).to.deep.equal([[1], [2, 3, 4], [2], [3], [4]]);
  });

  it('when concurrency is 2, then two batches run at once and no more', async () => {
    const g = gatedRun();
    const group = new GroupCommit(g.transact, g.apply, { maxBatch: 10, concurrency: 2, keyOf: (i: Item) => i.key });
    const results = [1, 2, 3, 4].map((value) => group.submit({ key: `k${value}`, value }));
    await tick();
    expect(g.batches.map((b) => b.map((i) => i.value))).to.deep.equal([[1], [2]]);
    expect(g.gates).to.have.length(2);
    await g.openAll();
    await Promise.all(results);
    expect(g.batches.map((b) => b.map((i) => i.value))).to.deep.equal([[1], [2], [3, 4]]);
  });

  it('when a batch is waiting for its transaction, then no second one starts for the same items', async () => {
    const g = gatedRun();
    let begun = 0;
    const counting = async <X>(work: (tx: unknown) => Promise<X>): Promise<X> => {
      begun++;
      await tick();
      return work(undefined);
    };
    const group = new GroupCommit(counting, g.apply, { maxBatch: 10, concurrency: 4, keyOf: (i: Item) => i.key });
    const results = [1, 2].map((value) => group.submit({ key: `k${value}`, value }));
    await tick();
    await tick();
    await g.openAll();
    await Promise.all(results);
    expect(begun).to.equal(1);
    expect(g.batches.map((b) => b.map((i) => i.value))).to.deep.equal([[1, 2]]);
  });

  it('when a transaction waits for a connection, then everything queued meanwhile joins its batch', async () => {
    const g = gatedRun();
    let connect!: () => void;
    const connected = new Promise<void>((resolve) => (connect = resolve));
    const slowTransact = async <X>(work: (tx: unknown) => Promise<X>): Promise<X> => {
      await connected;
      return work(undefined);
    };
    const group = new GroupCommit(slowTransact, g.apply, { maxBatch: 10, concurrency: 1, keyOf: (i: Item) => i.key });
    const results = [1, 2, 3].map((value) => group.submit({ key: `k${value}`, value }));
    connect();
    await tick();
    await g.openAll();
    expect(await Promise.all(results)).to.deep.equal([10, 20, 30]);
    expect(g.batches.map((b) => b.map((i) => i.value))).to.deep.equal([[1, 2, 3]]);
  });
});
