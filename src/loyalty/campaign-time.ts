/** Local time for campaigns: weekday, minutes and date of an instant in an IANA zone (pure, Intl). */

export const WEEKDAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;
export type Weekday = (typeof WEEKDAYS)[number];

const formatters = new Map<string, Intl.DateTimeFormat>();

/** The weekday, minutes since midnight and date (`YYYY-MM-DD`) of `at` in `timeZone` (Intl: no dependency, DST-correct). */
export function localTime(at: Date, timeZone: string): { weekday: Weekday; minutes: number; date: string } {
  let format = formatters.get(timeZone);
  if (format === undefined) {
    format = new Intl.DateTimeFormat('en-GB', {
      timeZone,
      weekday: 'short',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    });
    formatters.set(timeZone, format);
  }
  const parts = Object.fromEntries(format.formatToParts(at).map((p) => [p.type, p.value]));
  const weekday = String(parts['weekday']).toLowerCase().slice(0, 3) as Weekday;
  const date = `${String(parts['year']).padStart(4, '0')}-${String(parts['month'])}-${String(parts['day'])}`;
  return { weekday, minutes: Number(parts['hour']) * 60 + Number(parts['minute']), date };
}

export function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number);
  return (h ?? 0) * 60 + (m ?? 0);
}

export function inWindow(minutes: number, window: { readonly from: string; readonly to: string }): boolean {
  const from = minutesOf(window.from);
  const to = minutesOf(window.to);
  return from <= to ? minutes >= from && minutes < to : minutes >= from || minutes < to;
}

/** True when `timeZone` is an IANA zone this runtime knows. */
export function isTimeZone(timeZone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-GB', { timeZone });
    return true;
  } catch {
    return false;
  }
}
