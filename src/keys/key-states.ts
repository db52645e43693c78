/**
 * The states of a data-key version and which of them serve what (key-ring.ts explains the lifecycle).
 * A leaf of the keys folder: the ring and the key stores both read it.
 */
export type KeyState = 'published' | 'active' | 'decrypt-only' | 'retired' | 'destroyed';

export const READABLE_STATES: readonly KeyState[] = ['published', 'active', 'decrypt-only'];
/**
 * MAC versions that new fingerprints are written under. `published` is included so that, during the
 * publish phase, an instance that already sees the new version and one that does not yet still
 * collide on the old version's row, and after activation every instance collides on the new one.
 * `decrypt-only` is excluded: it is on its way out and the backfill is emptying it.
 */
export const INDEXING_STATES: readonly KeyState[] = ['published', 'active'];
