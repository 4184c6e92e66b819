/**
 * Names and numbers of the suekk_sync schema that more than one layer needs: the notification
 * channel, the capture triggers, the outbox's partitions and lanes, and when a relay counts as
 * alive. The SQL in sql/ uses the same values; a change here is a change there. Also the one check
 * that the schema is installed at all.
 */
import { UsageError } from '../errors.ts';
import { installedSchemaVersion, LATEST_SCHEMA_VERSION } from './migrations.ts';
import type { PoolClient } from './pool.ts';

/** The LISTEN/NOTIFY channel: an empty payload wakes relays, others are control messages. */
export const NOTIFY_CHANNEL = 'suekk_sync';

/** On the users table: INSERT and DELETE. */
export const CAPTURE_TRIGGER = 'suekk_sync_capture';
/** On the users table: UPDATE, only when a column capture reads changed (its WHEN condition). */
export const UPDATE_TRIGGER = 'suekk_sync_capture_update';
/** On the users table: TRUNCATE, before the rows go. */
export const TRUNCATE_TRIGGER = 'suekk_sync_capture_truncate';
export const CAPTURE_TRIGGERS = [CAPTURE_TRIGGER, UPDATE_TRIGGER, TRUNCATE_TRIGGER] as const;

/** suekk_sync.events_p0 … and deliveries_p0 …, rotated by suekk_sync.current_part. */
export const PARTITION_COUNT = 6;

/** Lane 0: live changes and pushes; lane 1: resync, claimed only when lane 0 leaves room. */
export type Lane = 0 | 1;

/** A relay is alive when it beat within this many seconds (it beats every 5). */
export const RELAY_ALIVE_SECONDS = 15;

/**
 * A round that failed for one of these reasons says the backend was down (or overloaded), not that
 * it refused the event: the user waits only for the backend, and goes again as soon as it answers.
 * No status at all: the request got no answer (refused, reset, timed out).
 */
export const BACKEND_DOWN_STATUSES = [408, 425, 429] as const;

/** The same, as a condition on an HTTP status column (null: no answer). */
export function backendDownCondition(column: string): string {
  return `(${column} is null or ${column} in (${BACKEND_DOWN_STATUSES.join(', ')}) or ${column} >= 500)`;
}

/** What every command that needs the schema says when there is none. */
export const NOT_INSTALLED = 'suekk-sync is not installed in this database; run `suekk-sync install` first.';

/**
 * Refuses (a usage error, exit 2) unless the schema this suekk-sync was built for is installed: the
 * one check every command that reads or writes suekk_sync makes before it does, so none of them
 * fails later on a missing relation or a column another version does not have.
 */
export async function requireSchema(db: Pick<PoolClient, 'query'>): Promise<void> {
  const version = await installedSchemaVersion(db);
  if (version === 0) throw new UsageError(NOT_INSTALLED);
  if (version < LATEST_SCHEMA_VERSION) {
    throw new UsageError(
      `The suekk_sync schema is at version ${version} but this suekk-sync needs ${LATEST_SCHEMA_VERSION}; run \`suekk-sync install\` to upgrade it.`,
    );
  }
  if (version > LATEST_SCHEMA_VERSION) {
    throw new UsageError(
      `The suekk_sync schema is at version ${version}, newer than this suekk-sync knows (${LATEST_SCHEMA_VERSION}); upgrade suekk-sync.`,
    );
  }
}
