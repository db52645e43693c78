/** Luhn (mod 10) lives with the card-data guard, a leaf module; kept here for existing imports. */
export { luhnValid } from '../card-data/card-data-guard.js';
