/** Durations as people write them (`500ms`, `30s`, `5m`, `24h`, `7d`) and as messages show them. */
import { UsageError } from './errors.ts';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `500ms`, `30s`, `1m`, `24h`, `7d` (or a bare number of milliseconds) into milliseconds. */
export function parseDuration(raw: string | number, what: string): number {
  if (typeof raw === 'number') {
    if (Number.isFinite(raw) && raw >= 0) return raw;
    throw new UsageError(`${what} must be a non-negative duration, not ${raw}.`);
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(raw);
  if (!match) {
    throw new UsageError(`${what} must be a duration such as 500ms, 30s, 5m, 24h or 7d, not ${JSON.stringify(raw)}.`);
  }
  return Math.round(Number(match[1]) * UNIT_MS[match[2] ?? 'ms']!);
}

/** `30s,1m,5m` → [30000, 60000, 300000]; the last entry repeats. */
export function parseSchedule(raw: string | readonly (string | number)[], what: string): number[] {
  const parts = typeof raw === 'string' ? raw.split(',').filter((p) => p.trim() !== '') : raw;
  if (parts.length === 0) throw new UsageError(`${what} needs at least one duration, e.g. 30s,1m,5m.`);
  return parts.map((p) => parseDuration(p, what));
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 60) return `${Number.isInteger(s) ? s : s.toFixed(1)}s`;
  if (s < 3600) return `${Math.round(s / 60)}m`;
  if (s < 86_400) return `${Math.round(s / 360) / 10}h`;
  return `${Math.round(s / 8640) / 10}d`;
}

/** 42s, 5m 3s, 2h 5m, 3d 4h: short enough for a table cell. */
export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86_400)}d ${Math.floor((s % 86_400) / 3600)}h`;
}
