/**
 * The database's write-time key check (triggers of migration 20261206000700) refuses a row written
 * under a key version that is not writable at that moment. Recognising that refusal is a database
 * concern: the key ring reloads and retries on it (retryOnStaleKey), the HTTP layer answers 503.
 */
import { isCheckViolation } from './check-violation.js';

/**
 * Whether the database refused a row because the key version it names is not writable (anymore): the
 * ring that chose it is stale. SQLSTATE 23514 with constraint `key_version_writable`.
 */
export function isKeyVersionNotWritable(error: unknown): boolean {
  return isCheckViolation(error, 'key_version_writable');
}
