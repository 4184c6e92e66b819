#!/usr/bin/env node
// The CLI from its TypeScript sources, through tsx (a development dependency), so a change to src/
// needs no build: `npm run dev`, `npm run suekk-sync -- …` and the tests run it. The installed
// package runs the compiled bin/suekk-sync.js. The project's tsconfig is named: tsx would
// otherwise look in the current folder, and from anywhere else the ink views (JSX) would be
// compiled for a React that is not in scope.
import { fileURLToPath } from 'node:url';
import { register } from 'tsx/esm/api';

register({ tsconfig: fileURLToPath(new URL('../tsconfig.json', import.meta.url)) });
await import('../src/cli/main.ts');
