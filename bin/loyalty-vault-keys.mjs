#!/usr/bin/env node
// The key CLI (npm run keys): docs/cli.md.
import { launch } from './launch.mjs';

await launch('keys', 'keysCli');
