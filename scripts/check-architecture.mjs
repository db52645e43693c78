#!/usr/bin/env node
/**
 * The architecture checks of `npm run lint` (docs/architecture.md):
 *  1. the dependency rules of .dependency-cruiser.cjs, run through dependency-cruiser's API (its CLI
 *     refuses Node 20, which this project still supports; the API runs there);
 *  2. every file in src/ over 400 lines says why in its header: its ESLint `max-lines` override carries
 *     a reason after `--` (ESLint itself enforces the limit and the override), and a file within 400
 *     lines has no override.
 * Exits 1 on any error.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { cruise } from 'dependency-cruiser';
import extractTSConfig from 'dependency-cruiser/config-utl/extract-ts-config';

const root = path.resolve(import.meta.dirname, '..');
process.chdir(root);
const require = createRequire(import.meta.url);
const config = require(path.join(root, '.dependency-cruiser.cjs'));

let failed = false;

const result = await cruise(
  ['src'],
  {
    ruleSet: { forbidden: config.forbidden, options: config.options },
    ...config.options,
    validate: true,
    outputType: 'err-long',
  },
  { extensions: ['.ts', '.js'] },
  { tsConfig: extractTSConfig(path.join(root, config.options.tsConfig.fileName)) },
);
process.stdout.write(result.output);
if (result.exitCode !== 0) failed = true;

const MAX_LINES = 400;
const OVERRIDE = /^\/\* eslint max-lines: \["error", \d+\] -- (.+?) \*\/$/;
function* tsFiles(dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* tsFiles(full);
    else if (entry.name.endsWith('.ts')) yield full;
  }
}
for (const file of tsFiles('src')) {
  const lines = fs.readFileSync(file, 'utf8').replace(/\n$/, '').split('\n');
  const first = lines[0] ?? '';
  if (first.startsWith('/* eslint max-lines') && !OVERRIDE.test(first)) {
    failed = true;
    console.error(
      `  error  ${file}: a max-lines override needs a one-line reason: /* eslint max-lines: ["error", N] -- why */`,
    );
  }
  // An override left on a file that shrank back under the limit keeps a stale reason (and a raised
  // limit the file could grow into unnoticed): it goes once the file fits.
  if (lines.length <= MAX_LINES && OVERRIDE.test(first)) {
    failed = true;
    console.error(`  error  ${file}: ${lines.length} lines: within ${MAX_LINES}, so its max-lines override must go`);
  }
  if (lines.length > MAX_LINES && !OVERRIDE.test(first)) {
    failed = true;
    console.error(`  error  ${file}: ${lines.length} lines (over ${MAX_LINES}) and no reason in its header`);
  }
}
process.exit(failed ? 1 : 0);
