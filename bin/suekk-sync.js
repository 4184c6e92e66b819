#!/usr/bin/env node
// The compiled CLI (npm run build, or prepare on npm ci/install). From a clone, npm run dev and
// scripts/suekk-sync-src.js run the TypeScript sources instead.
await import('../dist/cli/main.js');
