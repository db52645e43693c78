/** A deadline on work that cannot be cancelled (dns.lookup, a pool acquire): stop waiting for it. */
export class DeadlineExceeded extends Error {}

/**
 * `work`, or DeadlineExceeded after `ms`. The work itself is not cancelled (dns.lookup cannot be),
 * only no longer waited for: its late answer is dropped.
 */
export async function withinDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new DeadlineExceeded('deadline exceeded')), ms);
  });
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}
