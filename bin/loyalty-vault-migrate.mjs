#!/usr/bin/env node
// The migration CLI (npm run migrate): docs/cli.md.
import { launch } from './launch.mjs';

await launch('migrate', 'migrateProgram');
