/**
 * What a benchmark scenario is. Each scenario measures a target against a baseline in the same run
 * and reports the ratio: absolute figures depend on the machine, ratios travel (shared/design.md).
 */
import type { Measurement } from './load.js';

export interface LoadOptions {
  /** Concurrent connections of the load generator. */
  readonly connections: number;
  /** Seconds measured, per side. */
  readonly durationSeconds: number;
  /** Seconds of load before each measurement, discarded (JIT, pools, caches). */
  readonly warmupSeconds: number;
}

export interface ScenarioResult {
  readonly target: Measurement;
  readonly baseline: Measurement;
  /** Anything a reader needs to interpret the figures (what each side does). */
  readonly notes: readonly string[];
  /** The service's memory over the run, when the scenario samples it (the soak): charted by bench/lib/plots.ts. */
  readonly memory?: MemorySeries;
}

export interface MemorySeries {
  /** Every sample, `seconds` since the first window started; heap only when the service reports it. */
  readonly samples?: readonly { readonly seconds: number; readonly rssMiB: number; readonly heapUsedMiB?: number }[];
  /** Per minute, the lowest and highest sample. */
  readonly perMinute?: readonly { readonly minute: number; readonly floorMiB: number; readonly topMiB: number }[];
}

export interface Scenario {
  /** What `npm run bench -- <name>` selects; also the file name under bench/scenarios/. */
  readonly name: string;
  readonly description: string;
  /** Left out of a plain `npm run bench` (too long for it); runs when named. */
  readonly optional?: boolean;
  run(load: LoadOptions): Promise<ScenarioResult>;
}
