/**
 * The log and problem-body masking is the card-data guard's (src/card-data/card-data-guard.ts):
 * card numbers with any separators masked to their last four, track data masked whole, runs of more
 * than 19 digits redacted. Kept under its old name for existing imports.
 */
export { maskCardData as maskPans } from '../card-data/card-data-guard.js';
