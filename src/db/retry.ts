/**
 * Reruns a whole transaction when PostgreSQL aborted it to break a deadlock (40P01) or a
 * serialisation conflict (40001). Both are transient by definition; the transaction left nothing.
 */
const RETRYABLE = new Set(['40P01', '40001']);
const ATTEMPTS = 5;

export async function withRetry<T>(work: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code;
      if (attempt >= ATTEMPTS || typeof code !== 'string' || !RETRYABLE.has(code)) throw error;
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 20 * attempt));
    }
  }
}
