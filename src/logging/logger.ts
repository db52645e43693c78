/**
 * Structured JSON logging (pino). Every line passes through the card-data guard as the very last
 * step, so a PAN that slips into any field, message or error stack is masked whatever logged it.
 * Credentials are removed by path as well: the masking is a safety net, not a licence to log request
 * bodies.
 *
 * The guard is applied per field, not to the line: a line that may hold card data (the guard's
 * pre-scan) is parsed and every field masked except {@link UNMASKED_FIELDS}, which hold names the
 * service itself writes and that are PAN-shaped by construction (a migration named
 * `20261130000700_subscription_hardening` starts with a Luhn-valid 14-digit timestamp). Masking those
 * would garble the evidence auditors read; they never carry input.
 */
import { pino, type Logger, type DestinationStream } from 'pino';
import type { LogLevel } from '../config/config.js';
import { maskCardData, maskCardDataDeep, mayHoldCardData } from '../card-data/card-data-guard.js';

export type { Logger };

export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["proxy-authorization"]',
  'req.headers["webhook-signature"]',
  'req.headers["stripe-signature"]',
  'req.body',
  'res.headers["set-cookie"]',
  '*.password',
  '*.secret',
  '*.pan',
];

/** Top-level log fields that only ever hold names written by the service (migration file names). */
export const UNMASKED_FIELDS: ReadonlySet<string> = new Set(['migrations']);

/** One serialised log line with card data masked in every field but {@link UNMASKED_FIELDS}. */
export function maskLogLine(line: string): string {
  if (!mayHoldCardData(line)) return line;
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return maskCardData(line);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return maskCardData(line);
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
    if (UNMASKED_FIELDS.has(key) && isListOfMigrationNames(value)) {
      out[key] = value;
      continue;
    }
    const masked = maskCardDataDeep({ [key]: value }).value;
    Object.assign(out, masked);
  }
  return `${JSON.stringify(out)}${line.endsWith('\n') ? '\n' : ''}`;
}

const MIGRATION_NAME = /^\d{14}_[a-z0-9_]+$/;

function isListOfMigrationNames(value: unknown): boolean {
  return Array.isArray(value) && value.every((v) => typeof v === 'string' && MIGRATION_NAME.test(v));
}

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'loyalty-vault' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACTED_PATHS, censor: '[REDACTED]' },
      hooks: { streamWrite: maskLogLine },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ sync: false }),
  );
}
