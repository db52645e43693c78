/**
 * `npm run bench:plot -- <results.json>…`: (re)draws the SVG charts of bench results JSON files
 * without running anything, next to each file as `<stem>.<chart>.svg` (see bench/lib/plots.ts).
 * What `npm run bench` writes at its end, and how docs/performance/*.svg are regenerated.
 */
import path from 'node:path';
import { writeCharts } from './lib/plots.js';

async function main(): Promise<void> {
  const files = process.argv.slice(2);
  if (files.length === 0 || files.some((f) => f === '--help' || f === '-h')) {
    process.stdout.write(
      'usage: npm run bench:plot -- <results.json>…\n' +
        '  writes <stem>.throughput.svg, .p99.svg, .sweep.svg and .soak.svg (those with data) next to each file\n',
    );
    process.exitCode = files.length === 0 ? 2 : 0;
    return;
  }
  for (const file of files) {
    for (const out of await writeCharts(file)) process.stdout.write(`${path.relative(process.cwd(), out)}\n`);
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench:plot: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
