#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx, so there is no build step to forget. The
// project's tsconfig is named: tsx would otherwise look in the current directory, and run from
// anywhere else the ink views (JSX) were compiled for a React that is not in scope.
import { fileURLToPath } from 'node:url';
import { register } from 'tsx/esm/api';

register({ tsconfig: fileURLToPath(new URL('../tsconfig.json', import.meta.url)) });
await import('../src/cli/main.ts');
