/**
 * The database's clock for dual control (src/db/database-clock.ts says why it, not the operator's,
 * decides). Re-exported here so dual control's imports stand while its files are reworked (issue 20);
 * import it from db/ directly.
 */
export { databaseNow } from '../db/database-clock.js';
