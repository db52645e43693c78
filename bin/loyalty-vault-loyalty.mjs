#!/usr/bin/env node
// The loyalty CLI (npm run loyalty): docs/cli.md.
import { launch } from './launch.mjs';

await launch('loyalty', 'loyaltyProgram');
