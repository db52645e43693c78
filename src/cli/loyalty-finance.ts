/**
 * The loyalty CLI's finance commands: `liability` (the points liability from the ledger's history, as
 * JSON or CSV) and `notify` (the expiry notices due). Parsed completely before anything is opened.
 *
 * Dates: `--as-of 2026-11-30` means the end of that UTC day (every entry of the 30th counts);
 * `--from 2026-11-01` the start of that day. A full ISO 8601 instant is taken as given.
 */
import type { Command } from 'commander';
import { liabilityCsv } from '../loyalty/liability.js';
import type { LoyaltyService } from '../loyalty/loyalty-service.js';
import { cliCommand, DATABASE_ENV, onRun } from './cli-program.js';
import { UsageError } from './usage-error.js';

export type FinanceArgs =
  | { readonly command: 'notify'; readonly json: boolean }
  | {
      readonly command: 'liability';
      readonly asOf: Date | undefined;
      readonly from: Date | undefined;
      readonly format: 'json' | 'csv';
    };

interface Output {
  out(text: string): void;
}

const DAY = /^\d{4}-\d{2}-\d{2}$/;

/** A date or instant; a bare date is its day's start, or its end with `endOfDay`. */
export function parseInstant(value: string, option: string, endOfDay: boolean): Date {
  const iso = DAY.test(value) ? `${value}T00:00:00.000Z` : value;
  const date = new Date(iso);
  if (!/^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2}))?$/.test(value) || Number.isNaN(date.getTime())) {
    throw new UsageError(`${option} must be a date (YYYY-MM-DD) or an ISO 8601 instant`);
  }
  return DAY.test(value) && endOfDay ? new Date(date.getTime() + 86_400_000 - 1) : date;
}

export function addLiabilityCommands(program: Command, run: (args: FinanceArgs) => Promise<number> | number): void {
  const liability = cliCommand(program, {
    name: 'liability',
    description:
      'The points liability as of a date, from the ledger history: outstanding available and pending points by ' +
      'expiry month and tier, their value per currency, the flows of the period and the breakage rate.',
    env: [...DATABASE_ENV, 'LOYALTY_POINT_VALUES'],
    exitCodes: { 0: 'printed', 1: 'the run failed', 2: 'bad usage: nothing opened' },
    details: 'Definitions of every figure: docs/guides/finance.md.',
  });
  liability.option('--as-of <date>', 'the report as of the end of this UTC day (or this instant); default now');
  liability.option('--from <date>', 'the flows from the start of this UTC day (or this instant); default all history');
  liability.option('--format <format>', 'json (one line) or csv', 'json');
  onRun(liability, (self) => {
    const o = self.opts<{ asOf?: string; from?: string; format: string }>();
    if (o.format !== 'json' && o.format !== 'csv') throw new UsageError('--format must be json or csv');
    const asOf = o.asOf === undefined ? undefined : parseInstant(o.asOf, '--as-of', true);
    const from = o.from === undefined ? undefined : parseInstant(o.from, '--from', false);
    if (asOf !== undefined && from !== undefined && from > asOf)
      throw new UsageError('--from must not be after --as-of');
    return run({ command: 'liability', asOf, from, format: o.format });
  });
  const notify = cliCommand(program, {
    name: 'notify',
    description:
      'Send the points.expiring notices due (exactly once per lot and notice window; safe beside running ' +
      'instances and other runs).',
    env: [...DATABASE_ENV, 'LOYALTY_EXPIRY_NOTICE_DAYS'],
    exitCodes: { 0: 'done', 1: 'the run failed', 2: 'bad usage: nothing opened' },
  });
  notify.option('--json', 'the result as one JSON line', false);
  onRun(notify, (self) => run({ command: 'notify', json: self.opts<{ json: boolean }>().json }));
}

export async function runFinanceCommand(args: FinanceArgs, ledger: LoyaltyService, io: Output): Promise<number> {
  if (args.command === 'notify') {
    const run = await ledger.notices.sendDue();
    io.out(args.json ? `${JSON.stringify(run)}\n` : `sent ${run.notices} expiry notices for ${run.points} points\n`);
    return 0;
  }
  const report = await ledger.liability.report({
    ...(args.asOf === undefined ? {} : { asOf: args.asOf }),
    ...(args.from === undefined ? {} : { from: args.from }),
  });
  io.out(args.format === 'csv' ? liabilityCsv(report) : `${JSON.stringify(report)}\n`);
  return 0;
}
