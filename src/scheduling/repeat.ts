/**
 * In-process schedules the features return to the composition root, which stops them on close.
 * A run never overlaps the previous one; the next starts an interval after the last one ended.
 */

export interface Schedule {
  /** Stops the schedule and waits for a run in progress. */
  stop(): Promise<void>;
}

export const NO_SCHEDULE: Schedule = { stop: () => Promise.resolve() };

/**
 * Runs `run` every `intervalMs`, first after `firstRunAfterMs`. `run` handles its own errors (a
 * rejection is swallowed so the schedule continues). Timers are unref'd: they never keep the
 * process alive.
 */
export function repeatEvery(intervalMs: number, firstRunAfterMs: number, run: () => Promise<void>): Schedule {
  let running: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const tick = (): void => {
    running = run()
      .catch(() => undefined)
      .finally(() => {
        running = undefined;
        if (!stopped) timer = setTimeout(tick, intervalMs).unref();
      });
  };
  timer = setTimeout(tick, firstRunAfterMs).unref();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
