/** The resync progress view on a terminal: a bar, the counts, rate and ETA. */
import { Box, Text } from 'ink';
import type { ResyncProgress } from '../../ops/resync.ts';

export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '—';
  if (seconds < 60) return `${Math.ceil(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${Math.ceil(seconds % 60)}s`;
  return `${Math.floor(seconds / 3600)}h ${Math.round((seconds % 3600) / 60)}m`;
}

export function ResyncView({ progress, width = 40 }: { progress: ResyncProgress; width?: number }) {
  const total = Math.max(progress.total, progress.enqueued, 1);
  const done = progress.delivered + progress.failed;
  const filled = Math.min(width, Math.round((done / total) * width));
  const remaining = total - done;
  const eta = progress.rate > 0 ? remaining / progress.rate : Number.NaN;
  return (
    <Box flexDirection="column">
      <Text>
        <Text color="green">{'█'.repeat(filled)}</Text>
        <Text dimColor>{'░'.repeat(width - filled)}</Text> {Math.floor((done / total) * 100)}% ({done}/{total})
      </Text>
      <Text>
        enqueued {progress.enqueued}
        {progress.enqueueDone ? '' : '…'} · delivered <Text color="green">{progress.delivered}</Text> · failed{' '}
        <Text color={progress.failed > 0 ? 'red' : undefined}>{progress.failed}</Text> · waiting{' '}
        {progress.waiting + progress.blocked}
      </Text>
      <Text dimColor>
        {progress.rate.toFixed(0)} users/s · ETA {formatEta(eta)} · run {progress.runId}
      </Text>
    </Box>
  );
}
