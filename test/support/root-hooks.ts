/** Mocha root hooks (loaded with `require` in .mocharc.json): what a whole run sets up or tears down once. */
import { dropMigratedTemplate } from './database.js';

export const mochaHooks = {
  async afterAll(): Promise<void> {
    await dropMigratedTemplate();
  },
};
