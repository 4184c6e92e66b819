/** What every command needs: settings resolved from flags/env/file, and a database pool. */
import { loadSettings, requireDatabaseUrl, type FlagSettings, type Settings } from '../config.ts';
import { checkConnection, createPool, type Pool } from '../db/pool.ts';
import { requireSchema } from '../db/migrations.ts';

export interface GlobalFlags {
  config?: string;
  databaseUrl?: string;
}

export function settingsFrom(globals: GlobalFlags, extra: Omit<FlagSettings, 'config' | 'databaseUrl'> = {}): Settings {
  return loadSettings({ ...extra, config: globals.config, databaseUrl: globals.databaseUrl });
}

export interface DatabaseNeeds {
  /**
   * Refuse with one sentence (exit 2) unless this suekk-sync's schema is installed (default true):
   * only install and uninstall work on a database without it.
   */
  schema?: boolean;
}

/** Runs `work` with a connected pool and always closes it. */
export async function withDatabase<T>(
  settings: Settings,
  work: (pool: Pool) => Promise<T>,
  needs: DatabaseNeeds = {},
): Promise<T> {
  const url = requireDatabaseUrl(settings);
  const pool = createPool(url, { max: 4, applicationName: 'suekk-sync cli' });
  try {
    await checkConnection(pool, url);
    if (needs.schema ?? true) await requireSchema(pool);
    return await work(pool);
  } finally {
    await pool.end();
  }
}
