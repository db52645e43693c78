/**
 * `http_request_duration_seconds` by operation and status class. The operation is the OpenAPI
 * operationId the request matched (`unmatched` otherwise), never the path: a path can carry a card
 * number typed into the wrong place, and its values are unbounded. Observers are bound once per
 * operation and status class, so a request records its duration without building a label set.
 */
import { METRICS } from '../metrics/catalogue.js';
import type { Metrics } from '../metrics/metrics.js';

/** Told about every finished response: its operation (undefined: unmatched), status and duration. */
export type RequestObserver = (operationId: string | undefined, status: number, seconds: number) => void;

const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;

export function requestDurations(metrics: Metrics): RequestObserver {
  const histogram = metrics.histogram(METRICS.httpRequestDuration);
  const byOperation = new Map<string, ((seconds: number) => void)[]>();
  return (operationId, status, seconds) => {
    const operation = operationId ?? 'unmatched';
    let observers = byOperation.get(operation);
    if (observers === undefined) {
      observers = [];
      byOperation.set(operation, observers);
    }
    const index = Math.min(Math.max(Math.floor(status / 100) - 1, 0), STATUS_CLASSES.length - 1);
    let observe = observers[index];
    if (observe === undefined) {
      observe = histogram.bind({ operation, status_class: STATUS_CLASSES[index] as string });
      observers[index] = observe;
    }
    observe(seconds);
  };
}
