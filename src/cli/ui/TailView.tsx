/** `tail-log --follow` on a terminal: the counters on top, the latest log lines below. */
import { Box, Text } from 'ink';
import { formatAge } from '../../duration.ts';
import type { QueueGauges } from '../../db/outbox-queries.ts';
import type { LogEntry, RateSnapshot } from '../../ops/tail.ts';

export interface TailViewProps {
  /** The latest entries, oldest first; the view shows them all, so the caller bounds them. */
  entries: LogEntry[];
  rates: RateSnapshot;
  /** Undefined until the first read; the last values stay while the database does not answer. */
  gauges: QueueGauges | undefined;
  /** What is followed, e.g. `user alice` or `status failed`. */
  scope?: string;
  /** Set while the database does not answer; the view keeps what it has. */
  problem?: string;
}

const STATUS_COLOR: Record<string, string | undefined> = {
  delivered: 'green',
  failed: 'red',
  pending: 'yellow',
};

/** The plain log line is too wide for a terminal: time of day, a short webhook id, a header instead of key=value. */
const COLUMNS: [string, number, (e: LogEntry) => string][] = [
  ['time', 9, (e) => `${e.createdAt.toISOString().slice(11, 19)}Z`],
  ['user', 14, (e) => e.username || e.userId],
  ['action', 7, (e) => e.action],
  ['source', 7, (e) => e.source],
  ['status', 9, (e) => e.status],
  ['try/rnd', 7, (e) => `${e.attempts}/${e.rounds}`],
  ['http', 4, (e) => (e.httpStatus === null ? '' : String(e.httpStatus))],
  ['took', 7, (e) => ms(e.durationMs, '')],
  ['webhook', 12, (e) => e.webhookId.slice(0, 12)],
];

function row(cells: string[]): string {
  return cells
    .map((cell, i) => (i === cells.length - 1 ? cell : cell.slice(0, COLUMNS[i]![1]).padEnd(COLUMNS[i]![1])))
    .join(' ');
}

function viewLine(e: LogEntry): string {
  const line = row(COLUMNS.map(([, , cell]) => cell(e)));
  return e.error !== null && e.status !== 'delivered' ? `${line} ${e.error}` : line;
}

function ms(value: number | null, none = '—'): string {
  if (value === null) return none;
  return value < 1_000 ? `${value}ms` : `${(value / 1_000).toFixed(1)}s`;
}

export function TailView({ entries, rates, gauges, scope, problem }: TailViewProps) {
  return (
    <Box flexDirection="column">
      <Text bold>suekk-sync tail-log{scope ? ` · ${scope}` : ''} · following (Ctrl-C to stop)</Text>
      <Text>
        delivered <Text color="green">{rates.deliveredPerMinute}</Text>/min · failed{' '}
        <Text color={rates.failedPerMinute > 0 ? 'red' : undefined}>{rates.failedPerMinute}</Text>/min · lag p50{' '}
        {ms(rates.lagP50Ms)} p99 {ms(rates.lagP99Ms)}
      </Text>
      <Text>
        backlog {gauges?.backlog ?? '—'} · oldest pending{' '}
        {gauges?.oldestPendingSeconds == null ? '—' : formatAge(gauges.oldestPendingSeconds)} · parked users{' '}
        <Text color={gauges !== undefined && gauges.parkedUsers > 0 ? 'red' : undefined}>
          {gauges?.parkedUsers ?? '—'}
        </Text>
        {gauges?.paused ? <Text color="yellow"> · PAUSED</Text> : null}
      </Text>
      {problem ? <Text color="red">{problem}</Text> : null}
      <Box flexDirection="column" marginTop={1}>
        <Text dimColor>{row(COLUMNS.map(([name]) => name))}</Text>
        {entries.length === 0 ? <Text dimColor>(no events yet)</Text> : null}
        {entries.map((e) => (
          <Text
            key={`${e.id}:${e.status}:${e.attempts}`}
            color={STATUS_COLOR[e.status]}
            dimColor={e.status === 'skipped'}
            wrap="truncate-end"
          >
            {viewLine(e)}
          </Text>
        ))}
      </Box>
    </Box>
  );
}
