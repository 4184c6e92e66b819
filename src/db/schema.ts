/**
 * The suekk_sync schema's vocabulary, for every layer: the notification channel, the capture
 * triggers, the actions and the statuses an event can have, the outbox's partitions and lanes, and
 * when a relay counts as alive. The SQL in sql/ uses the same values; a change here is a change
 * there. No imports, so the light webhook entry can use it too.
 */

/** The LISTEN/NOTIFY channel: an empty payload wakes relays, others are control messages. */
export const NOTIFY_CHANNEL = 'suekk_sync';

/** What a change did to a user: the action column of an event, and the webhook body's `action`. */
export const ACTIONS = ['created', 'updated', 'deleted'] as const;
export type Action = (typeof ACTIONS)[number];

/** What the event log says of an event (the event_log view's status). */
export const EVENT_STATUSES = ['pending', 'delivered', 'failed', 'skipped', 'superseded'] as const;
export type EventStatus = (typeof EVENT_STATUSES)[number];

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
