import { refuseCardData } from './card-data-guard.js';

/** Free text is stored and shown back: a card number in it is refused, never kept (the card-data guard). */
export function refuseCardNumbers(fields: Readonly<Record<string, string | undefined>>): void {
  refuseCardData(fields, '/body');
}

/**
 * A canonical UUID (8-4-4-4-12 hexadecimal digits) standing on its own: not glued to a letter or digit,
 * and not continuing a digit run across separators on either side (so `4111-<uuid>` is not one).
 */
const STANDALONE_UUID =
  /(?<![0-9A-Za-z])(?<![0-9][^0-9A-Za-z]*)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?![0-9A-Za-z])(?![^0-9A-Za-z]*[0-9])/gi;

/**
 * A client-chosen identifier (an `Idempotency-Key`, a webhook message id) is refused like other client
 * input, with the UUIDs it holds set aside first: a random UUID's digit groups chain across its dashes
 * into a Luhn-valid run about once in 180 values, and clients are told to send UUIDs, bare or after a
 * prefix (`order-7-<uuid>`, `msg_<uuid>`). A card number is never UUID-shaped by accident; whatever
 * else the identifier holds is checked as usual.
 */
export function refuseCardDataInIdentifier(name: string, value: string, prefix: string): void {
  refuseCardData({ [name]: value.replace(STANDALONE_UUID, 'uuid') }, prefix);
}
