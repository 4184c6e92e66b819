/**
 * Puts events into the states a relay leaves them in (delivered, failed, waiting for a next round),
 * through the relay's own claim and release statements, for tests of what readers show. Events are
 * never updated: these write streams and the delivery log, exactly as a relay would.
 */
import { claimStreams, releaseStreams, type ClaimedStream, type HeadState } from '../../src/db/relay-queries.ts';
import type { TestDatabase } from './db.ts';

const RELAY = 'test-settler';
const OPTIONS = { leaseMs: 60_000, perStream: 10_000 };

/** Leases every user with work to the settler, hands each back due unless `keep` says otherwise. */
async function claimAll(db: TestDatabase): Promise<ClaimedStream[]> {
  const streams: ClaimedStream[] = [];
  for (;;) {
    const claim = await claimStreams(db.pool, RELAY, {
      limit: 1000,
      ...OPTIONS,
      readLimit: 100_000,
      answerBell: false,
    });
    streams.push(...claim.streams);
    if (claim.streams.length < 1000 && !claim.more) return streams;
  }
}

type Settle = (stream: ClaimedStream) => Parameters<typeof releaseStreams>[2][number];

async function settle(db: TestDatabase, decide: Settle): Promise<void> {
  const streams = await claimAll(db);
  if (streams.length > 0) await releaseStreams(db.pool, RELAY, streams.map(decide), OPTIONS);
}

/** The users' leading events that `delivered` picks (all of them by default) are delivered with `httpStatus`. */
export async function markDelivered(
  db: TestDatabase,
  delivered: (event: { id: string; body: string }) => boolean = () => true,
  httpStatus = 200,
): Promise<void> {
  await settle(db, (stream) => {
    const done: typeof stream.events = [];
    for (const event of stream.events) {
      if (!delivered(event)) break; // order: nothing after an undelivered event
      done.push(event);
    }
    return {
      userId: stream.userId,
      kind: done.length === stream.events.length ? 'idle' : 'return',
      cursor: done.at(-1)?.id ?? stream.cursor,
      head: null,
      delivered: done.map((e) => ({
        eventId: e.id,
        outcome: 'delivered' as const,
        supersededBy: null,
        attempts: 1,
        rounds: 1,
        httpStatus,
        durationMs: 12,
        response: null,
        runId: e.runId,
      })),
    };
  });
}

/** The first undelivered event of each user `pick` says had a round that failed: parked, or waiting until `dueAt`. */
export async function markHeadFailed(
  db: TestDatabase,
  pick: (event: { id: string; body: string; userId: string }) => boolean,
  head: Partial<Omit<HeadState, 'eventId'>> & { dueAt?: Date } = {},
): Promise<void> {
  await settle(db, (stream) => {
    const first = stream.events[0];
    if (first === undefined || !pick(first)) {
      return { userId: stream.userId, kind: 'return', cursor: stream.cursor, head: null, delivered: [] };
    }
    const { dueAt, ...rest } = head;
    return {
      userId: stream.userId,
      kind: dueAt === undefined ? 'park' : 'reschedule',
      cursor: stream.cursor,
      dueAt,
      head: {
        eventId: first.id,
        attempts: 1,
        rounds: 1,
        httpStatus: 400,
        error: 'HTTP 400',
        response: null,
        durationMs: 7,
        ...rest,
      },
      delivered: [],
    };
  });
}

/** Whether a body is a user's, by its username (the fixed key order makes this exact). */
export const byUsername = (username: string) => (event: { body: string }) =>
  event.body.includes(`"username":${JSON.stringify(username)},`);
