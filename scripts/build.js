#!/usr/bin/env node
/**
 * `npm run build` (and `prepare`, so `npm ci` on a clone builds too): compiles src/ to dist/,
 * JavaScript and declarations, from a clean folder so a deleted source leaves no module behind.
 *
 * tsc rewrites the sources' `./x.ts` imports to `./x.js` in the JavaScript but leaves them as they
 * are in the declarations; they are rewritten here, so a backend's TypeScript, of any version or
 * resolution mode, reads the types without being told about .ts imports.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const dist = join(root, 'dist');

rmSync(dist, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const { status } = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
if (status !== 0) process.exit(status ?? 1);

const relativeTsImport = /((?:from|import)\s*\(?\s*['"])(\.\.?\/[^'"]*?)\.tsx?(['"])/g;
for (const entry of readdirSync(dist, { recursive: true, encoding: 'utf8' })) {
  if (!entry.endsWith('.d.ts')) continue;
  const file = join(dist, entry);
  const text = readFileSync(file, 'utf8');
  const fixed = text.replace(relativeTsImport, '$1$2.js$3');
  if (fixed !== text) writeFileSync(file, fixed);
}
