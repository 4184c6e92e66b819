/**
 * The options of more than one command, the parsers of option values, and the one way help shows a
 * default. A bad value is a usage error (exit 2) that commander prints with the option and the
 * value, e.g. "option '--port <port>' argument '70000' is invalid. It must be a whole number from 0
 * to 65535."
 */
import { InvalidArgumentError, Option } from 'commander';
import { formatDuration, parseDuration, parseSchedule } from '../duration.ts';
import { UsageError } from '../errors.ts';

export function intOption(min: number, max = Number.MAX_SAFE_INTEGER) {
  const range = max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `from ${min} to ${max}`;
  return (raw: string): number => {
    // Digits only: Number() would also take "", " 8", "1e3" and "0x10".
    const value = /^\d+$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(value) || value < min || value > max) {
      throw new InvalidArgumentError(`It must be a whole number, ${range}.`);
    }
    return value;
  };
}

export function numberOption(min: number, max = Number.MAX_VALUE) {
  const range = max === Number.MAX_VALUE ? `${min} or more` : `from ${min} to ${max}`;
  return (raw: string): number => {
    const value = raw.trim() === '' ? NaN : Number(raw);
    if (!Number.isFinite(value) || value < min || value > max) {
      throw new InvalidArgumentError(`It must be a number, ${range}.`);
    }
    return value;
  };
}

/**
 * A time: a bare number of milliseconds (`10000`) or a duration (`10s`, `500ms`, `2m`), as
 * milliseconds. Flags named `-ms` keep taking plain numbers, so scripts written for them still work.
 */
export function durationOption(minMs: number, maxMs = Number.MAX_SAFE_INTEGER) {
  const range =
    maxMs === Number.MAX_SAFE_INTEGER
      ? `${formatDuration(minMs)} or more`
      : `from ${formatDuration(minMs)} to ${formatDuration(maxMs)}`;
  return (raw: string): number => {
    let ms: number;
    try {
      ms = Math.round(parseDuration(raw, 'value'));
    } catch {
      ms = NaN;
    }
    if (!Number.isSafeInteger(ms) || ms < minMs || ms > maxMs) {
      throw new InvalidArgumentError(
        `It must be a duration such as 500ms, 10s or 2m (or a number of milliseconds), ${range}.`,
      );
    }
    return ms;
  };
}

/** Durations separated by commas (`30s,1m,5m`), as milliseconds. */
export function scheduleOption(raw: string): number[] {
  try {
    return parseSchedule(raw, 'value');
  } catch {
    throw new InvalidArgumentError('It must be one or more durations separated by commas, such as 30s,1m,5m.');
  }
}

/** A fraction from 0 to 1, such as receive's --fail-rate. */
export function fractionOption(raw: string): number {
  const n = Number(raw);
  if (raw.trim() === '' || !(n >= 0 && n <= 1)) throw new InvalidArgumentError('It must be a number from 0 to 1.');
  return n;
}

/**
 * The one way help shows a default, commander's own: `(default: X)`. For options whose default is
 * not a value commander holds: one that comes from the environment or the config file, or a text.
 */
export function withDefault(description: string, shown: string | number): string {
  return `${description} (default: ${shown})`;
}

/** Said once under the options of a command that takes times (addHelpText('after', …)). */
export const DURATION_HELP =
  '\nA <duration> is a number of milliseconds (10000) or a duration: 500ms, 10s, 2m, 1h, 7d.';

/** resync's and push's --action: what the event says happened to the user. */
export function actionOption(): Option {
  return new Option(
    '--action <action>',
    withDefault('override the action', 'created, or deleted for soft-deleted users'),
  ).choices(['created', 'updated', 'deleted']);
}

/** How long push and retry wait for the outcome when neither --wait nor --no-wait is given. */
export const DEFAULT_WAIT = '1m';

/**
 * push's and retry's --wait <duration> or --no-wait, as commander leaves it (the text, false, or
 * nothing): whether to wait for the outcome, and how long.
 */
export function waitOption(raw: string | false | undefined): { wait: boolean; timeoutMs: number } {
  if (raw === false) return { wait: false, timeoutMs: 0 };
  const timeoutMs = parseDuration(raw ?? DEFAULT_WAIT, '--wait');
  if (timeoutMs <= 0) throw new UsageError('--wait must be longer than 0; pass --no-wait to only enqueue.');
  return { wait: true, timeoutMs };
}
