import type { Command } from 'commander';
import { requireDatabaseUrl } from '../config.ts';
import { createPool } from '../db/pool.ts';
import { formatAge, getStatus, type StatusReport, type UnreachableReport } from '../ops/status.ts';
import { settingsFrom, type GlobalFlags } from './context.ts';

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('is capture on, is anything stuck, is a relay alive (exit 1 when unhealthy)')
    .option('--json', 'print one JSON object')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>());
      const url = requireDatabaseUrl(settings);
      // Not withDatabase: an unreachable database is a status to report, not an error to throw.
      const pool = createPool(url, { max: 1, applicationName: 'suekk-sync status' });
      let report: StatusReport | UnreachableReport;
      try {
        report = await getStatus(pool, {
          // Without a config file the defaults stand in, and they say nothing about what was installed.
          source: settings.configFile === undefined ? undefined : settings.source,
          databaseUrl: url,
        });
      } finally {
        await pool.end();
      }
      process.stdout.write(opts.json ? `${JSON.stringify(report)}\n` : formatStatus(report));
      if (!report.healthy) process.exitCode = 1;
    });
}

export function formatStatus(report: StatusReport | UnreachableReport): string {
  const rows: [string, string][] = [['healthy', report.healthy ? 'yes' : 'NO'], ['database', report.database]];
  if (report.database === 'reachable') {
    const r = report;
    const schema =
      r.schemaVersion === null
        ? 'not installed'
        : `${r.schemaVersion}${r.schemaVersion === r.latestSchemaVersion ? ' (current)' : ` (this suekk-sync needs ${r.latestSchemaVersion})`}`;
    const alive = r.relays.filter((x) => x.alive);
    rows.push(
      ['schema version', schema],
      ['table', r.table ?? '—'],
      ['trigger', r.trigger.installed ? (r.trigger.enabled ? 'installed, enabled' : 'installed, DISABLED') : 'MISSING'],
      ['capture', r.drift === null ? (r.table === null ? '—' : 'not checked') : r.drift.length === 0 ? 'as installed' : `DRIFTED: ${r.drift.join(', ')}`],
      ['notify', r.notify === null ? '—' : r.notify ? 'on' : 'off (relays poll)'],
      ['paused', r.paused ? 'YES' : 'no'],
      ['backlog', `${r.backlog} pending${r.oldestPendingSeconds === null ? '' : `, oldest ${formatAge(r.oldestPendingSeconds)}`}`],
      ['failed', String(r.failed)],
      ['parked users', String(r.parkedUsers)],
      ['delivered (5m)', String(r.deliveredLast5m)],
      [
        'backend',
        r.backend === null
          ? '— (no relay alive to tell)'
          : r.backend.state === 'up'
            ? 'up'
            : `DOWN since ${r.backend.since}${r.backend.probing ? ', relays probing' : ''}`,
      ],
      ['relays', `${alive.length} alive`],
    );
    for (const relay of r.relays) {
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
