#!/usr/bin/env node
// The compiled CLI (npm run build, or prepare on npm ci/install). From a clone, npm run dev and
// scripts/suekk-sync-src.js run the TypeScript sources instead.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  // A clone installed with --ignore-scripts, or dist/ deleted: say how to build, not a stack trace.
  process.stderr.write(
    `suekk-sync: ${fileURLToPath(main)} is missing; run npm run build in ${fileURLToPath(new URL('..', import.meta.url))}.\n`,
  );
  process.exit(2);
}
await import(main.href);
