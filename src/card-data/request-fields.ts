import { refuseCardData } from './card-data-guard.js';

/** Free text is stored and shown back: a card number in it is refused, never kept (the card-data guard). */
export function refuseCardNumbers(fields: Readonly<Record<string, string | undefined>>): void {
  refuseCardData(fields, '/body');
}
