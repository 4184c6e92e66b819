// status: is capture on, is anything stuck, is a relay alive; a table for people, JSON for checks.
import type { Command } from 'commander';
import { requireDatabaseUrl } from '../../config.ts';
import { createPool } from '../../db/pool.ts';
import { formatAge, formatDuration, parseDuration } from '../../duration.ts';
import {
  DEFAULT_MAX_LAG_SECONDS,
  getStatus,
  type NotInstalledReport,
  type StatusReport,
  type UnreachableReport,
} from '../../ops/status.ts';
import { settingsFrom, type GlobalFlags } from '../context.ts';
import { withDefault } from '../options.ts';

export function register(program: Command): void {
  program
    .command('status')
    .description('is capture on, is anything stuck, is a relay alive (exit 1 when unhealthy)')
    .option('--json', 'print one JSON object')
    .option(
      '--max-lag <duration>',
      withDefault(
        'a change undelivered this long while relays run is an outage',
        formatDuration(DEFAULT_MAX_LAG_SECONDS * 1000),
      ),
    )
    .action(async (opts: { json?: boolean; maxLag?: string }, cmd: Command) => {
      const maxLagSeconds = opts.maxLag === undefined ? undefined : parseDuration(opts.maxLag, '--max-lag') / 1000;
      const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>());
      const url = requireDatabaseUrl(settings);
      // Not withDatabase: an unreachable database, or one without suekk-sync, is a status to
      // report, not an error to throw.
      const pool = createPool(url, { max: 1, applicationName: 'suekk-sync status' });
      let report: StatusReport | NotInstalledReport | UnreachableReport;
      try {
        report = await getStatus(pool, {
          // Without a config file the defaults stand in, and they say nothing about what was installed.
          source: settings.configFile === undefined ? undefined : settings.source,
          databaseUrl: url,
          maxLagSeconds,
        });
      } finally {
        await pool.end();
      }
      process.stdout.write(opts.json ? `${JSON.stringify(report)}\n` : formatStatus(report));
      if (!report.healthy) process.exitCode = 1;
    });
}

/** What the report cannot know (suekk-sync not installed) shows as a dash. */
const UNKNOWN = '—';

export function formatStatus(report: StatusReport | NotInstalledReport | UnreachableReport): string {
  const rows: [string, string][] = [
    ['healthy', report.healthy ? 'yes' : 'NO'],
    ['database', report.database],
  ];
  if (report.database === 'reachable') {
    const r = report;
    const known = <T>(value: T | null, show: (v: T) => string): string => (value === null ? UNKNOWN : show(value));
    const schema =
      r.schemaVersion === null
        ? 'not installed'
        : `${r.schemaVersion}${r.schemaVersion === r.latestSchemaVersion ? ' (current)' : ` (this suekk-sync needs ${r.latestSchemaVersion})`}`;
    rows.push(
      ['schema version', schema],
      ['table', r.table ?? UNKNOWN],
      ['trigger', r.trigger.installed ? (r.trigger.enabled ? 'installed, enabled' : 'installed, DISABLED') : 'MISSING'],
      [
        'capture',
        r.drift === null
          ? r.table === null
            ? UNKNOWN
            : 'not checked'
          : r.drift.length === 0
            ? 'as installed'
            : `DRIFTED: ${r.drift.join(', ')}`,
      ],
      ['notify', known(r.notify, (on) => (on ? 'on' : 'off (relays poll)'))],
      ['paused', known(r.paused, (p) => (p ? 'YES' : 'no'))],
      [
        'backlog',
        known(
          r.backlog,
          (n) =>
            `${n} pending${r.oldestPendingSeconds === null ? '' : `, oldest ${formatAge(r.oldestPendingSeconds)}`}`,
        ),
      ],
      ['failed', known(r.failed, String)],
      ['parked users', known(r.parkedUsers, String)],
      ['delivered (5m)', known(r.deliveredLast5m, String)],
      ['last error', r.lastError ?? UNKNOWN],
      [
        'backend',
        r.relays === null
          ? UNKNOWN
          : r.backend === null
            ? `${UNKNOWN} (no relay alive to tell)`
            : r.backend.state === 'up'
              ? 'up'
              : `DOWN since ${r.backend.since}${r.backend.probing ? ', relays probing' : ''}`,
      ],
      ['relays', known(r.relays, (list) => `${list.filter((x) => x.alive).length} alive`)],
    );
    for (const relay of r.relays ?? []) {
      rows.push([
        '',
        `${relay.host} pid ${relay.pid} v${relay.version}, beat ${formatAge(relay.heartbeatAgeSeconds)} ago${relay.alive ? '' : ' (not alive)'}`,
      ]);
    }
  }
  const width = Math.max(...rows.map(([label]) => label.length));
  let out = rows.map(([label, value]) => `${label.padEnd(width)}  ${value}`).join('\n') + '\n';
  if (report.problems.length > 0) out += `\nProblems:\n${report.problems.map((p) => `  - ${p}\n`).join('')}`;
  if ('warnings' in report && report.warnings.length > 0) {
    out += `\nWarnings:\n${report.warnings.map((w) => `  - ${w}\n`).join('')}`;
  }
  return out;
}
