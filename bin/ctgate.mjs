#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx, so a checkout after `npm ci` needs no build step.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
const code = await main(process.argv.slice(2));
process.exitCode = code;
