/**
 * Structured JSON logging (pino). Every line passes through {@link maskPans} as the very last step,
 * so a PAN that slips into any field, message or error stack is masked whatever logged it. Credentials
 * are removed by path as well: the masking is a safety net, not a licence to log request bodies.
 */
import { pino, type Logger, type DestinationStream } from 'pino';
import type { LogLevel } from '../config/config.js';
import { maskPans } from './pan-redactor.js';

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

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'loyalty-vault' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACTED_PATHS, censor: '[REDACTED]' },
      hooks: { streamWrite: maskPans },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ sync: false }),
  );
}
