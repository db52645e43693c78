/**
 * The load generator: autocannon, in the bench process, against a server in another process.
 */
import autocannon from 'autocannon';
import type { LoadOptions } from './scenario.js';

export interface Target {
  /** Short label for the report, e.g. `GET /v1/whoami`. */
  readonly label: string;
  readonly url: string;
  readonly method?: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH';
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string;
  /** A fresh body per request (e.g. a new card number each time), instead of a fixed `body`. */
  readonly nextBody?: () => string;
  /**
   * Per request: a fresh body, extra headers and/or another path (e.g. a signed webhook delivery, or
   * a random shopper's URL with that shopper's token). What it leaves out stays as `url`, `headers`
   * and `body` say.
   */
  readonly nextRequest?: () => NextRequest;
  /** Sees every answer, warm-up included (e.g. to check afterwards what each 2xx created). */
  readonly onResponse?: (status: number, body: string) => void;
  /** The server process, when it is a child of the bench: its peak RSS is reported. */
  readonly server?: { memory(): { readonly peakRssMiB: number } | undefined };
}

export interface NextRequest {
  readonly body?: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Path and query, replacing those of `url`. */
  readonly path?: string;
}

export interface Measurement {
  readonly label: string;
  /** Operations per second (requests, or `unit` when set: rows for the re-encryption bench). */
  readonly requestsPerSecond: number;
  /** What one operation is, when not an HTTP request (`rows`). */
  readonly unit?: string;
  /** Absent for throughput-only measurements (a backfill has no per-request latency). */
  readonly latencyMs?: { readonly p50: number; readonly p90: number; readonly p99: number; readonly max: number };
  readonly requests: number;
  readonly durationSeconds: number;
  readonly non2xx: number;
  readonly errors: number;
  /** Peak resident set size of the server process over its life up to the end of the measurement. */
  readonly peakRssMiB?: number;
}

function fire(target: Target, connections: number, seconds: number): Promise<autocannon.Result> {
  const { nextBody, nextRequest, onResponse } = target;
  const perRequest = nextBody !== undefined || nextRequest !== undefined || onResponse !== undefined;
  return autocannon({
    url: target.url,
    method: target.method ?? 'GET',
    connections,
    duration: seconds,
    pipelining: 1,
    ...(target.headers === undefined ? {} : { headers: { ...target.headers } }),
    ...(target.body === undefined ? {} : { body: target.body }),
    ...(!perRequest
      ? {}
      : {
          requests: [
            {
              setupRequest: (request: autocannon.Request) => {
                if (nextRequest === undefined)
                  return nextBody === undefined ? request : { ...request, body: nextBody() };
                const next = nextRequest();
                return {
                  ...request,
                  ...(next.path === undefined ? {} : { path: next.path }),
                  ...(next.body === undefined ? {} : { body: next.body }),
                  ...(next.headers === undefined ? {} : { headers: { ...request.headers, ...next.headers } }),
                };
              },
              ...(onResponse === undefined
                ? {}
                : { onResponse: (status: number, body: string) => onResponse(status, body) }),
            },
          ],
        }),
  });
}

/**
 * Warms the target up, then measures it. A run with any error or non-2xx answer is refused: the
 * figure would describe an error path, not the operation.
 */
export async function measure(target: Target, load: LoadOptions): Promise<Measurement> {
  if (load.warmupSeconds > 0) await fire(target, load.connections, load.warmupSeconds);
  const result = await fire(target, load.connections, load.durationSeconds);
  if (result.errors > 0 || result.non2xx > 0 || result['2xx'] === 0) {
    throw new Error(
      `${target.label}: ${result.errors} connection errors and ${result.non2xx} non-2xx answers out of ` +
        `${result.requests.total} requests; refusing to report this run`,
    );
  }
  const peakRssMiB = target.server?.memory()?.peakRssMiB;
  return {
    label: target.label,
    ...(peakRssMiB === undefined ? {} : { peakRssMiB }),
    requestsPerSecond: result.requests.average,
    latencyMs: { p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99, max: result.latency.max },
    requests: result.requests.total,
    durationSeconds: result.duration,
    non2xx: result.non2xx,
    errors: result.errors,
  };
}
