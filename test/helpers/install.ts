/** Shared by the install tests: what an install left, and how Postgres refused a statement. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import type { TestDatabase } from './db.ts';

export async function isInstalled(db: TestDatabase): Promise<{ schema: boolean; triggers: number }> {
  const { rows } = await db.pool.query<{ schema: boolean; triggers: number }>(
    `select to_regnamespace('suekk_sync') is not null as schema,
            (select count(*)::int from pg_trigger where tgname like 'suekk_sync%') as triggers`,
  );
  return rows[0]!;
}

/** Postgres refused the statement and said, in its detail, which object stopped it. */
export async function refused(t: Test, statement: Promise<unknown>, detail: RegExp): Promise<void> {
  const err = await statement.then(
    () => undefined,
    (e: { detail?: string }) => e,
  );
  t.ok(err, `refused: ${detail}`);
  t.match(err?.detail ?? '', detail);
}

export function configFile(content: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'suekk-cfg-'));
  const path = join(dir, 'suekk-sync.json');
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}
