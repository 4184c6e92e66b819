/** tap's `after` script (package.json): stops the embedded PostgreSQL of embedded-setup.ts, if it started one. */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { stopEmbeddedPostgres } from '../../src/dev/embedded.ts';
import { embeddedRunDir } from './server-url.ts';

const runDir = embeddedRunDir();
await stopEmbeddedPostgres(join(runDir, 'pgdata'));
rmSync(runDir, { recursive: true, force: true });
