/**
 * Baseline of the schema history. It creates nothing: feature tables arrive in their own, later
 * migrations. It exists so that every build ships a `migrations/` folder (the service refuses to start
 * without one, rather than run silently against an unmigrated database) and every database records
 * the same first entry.
 */
export function up(): Promise<void> {
  return Promise.resolve();
}

export function down(): Promise<void> {
  return Promise.resolve();
}
