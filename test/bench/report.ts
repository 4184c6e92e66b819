/**
 * The results file and the table. The top-level keys follow the shape exactly; everything
 * else a scenario measured (each run, CPU per process group, the peer's configurations) goes under
 * `details`, so the headline stays comparable between runs while nothing is thrown away.
 *
 * Targets are shown beside the figures, as ratios from the same run, never asserted: a bench on a
 * shared 2-core machine informs; it does not pass or fail.
 */
import type { CeilingResult } from './scenarios/ceiling.ts';
import type { DrainResult } from './scenarios/drain.ts';
import type { HotUserResult } from './scenarios/hot-user.ts';
import type { LatencyResult } from './scenarios/latency.ts';
import type { PeerResult } from './scenarios/peer.ts';
import type { ResyncResult } from './scenarios/resync.ts';
import type { LongTxResult } from './scenarios/longtx.ts';
import type { OutageResult } from './scenarios/outage.ts';
import type { LoginOverheadResult, TriggerOverheadResult } from './scenarios/trigger-overhead.ts';
import { round } from './stats.ts';

export interface Results {
  machine: {
    cpus: number;
    node: string;
    postgres: string;
    load_avg_start: number[];
    load_avg_end: number[];
    quick: boolean;
    started_at: string;
    total_seconds: number;
  };
  ceiling?: CeilingResult;
  drain?: DrainResult;
  peer?: PeerResult;
  latency?: LatencyResult;
  hotUser?: HotUserResult;
  resync?: ResyncResult;
  trigger?: TriggerOverheadResult;
  login?: LoginOverheadResult;
  longtx?: LongTxResult;
  outage?: OutageResult;
  errors: Record<string, string>;
  diagnostics: Record<string, unknown>;
}

const pick = <T extends object, K extends keyof T>(o: T | undefined, keys: K[]): Pick<T, K> | null =>
  o === undefined ? null : (Object.fromEntries(keys.map((k) => [k, o[k]])) as Pick<T, K>);

/** The JSON written to --out. */
export function resultsJson(r: Results): Record<string, unknown> {
  return {
    machine: r.machine,
    ceiling: pick(r.ceiling, ['rps']),
    drain: pick(r.drain, ['events', 'users', 'eps']),
    drain_logging: r.drain?.withoutInfoLogs
      ? {
          eps_without_info_logs: r.drain.withoutInfoLogs.eps,
          cost: round(1 - r.drain.eps / r.drain.withoutInfoLogs.eps, 3),
        }
      : null,
    peer: pick(r.peer, ['name', 'version', 'ordered_eps', 'unordered_eps', 'latency_ms']),
    latency_ms: pick(r.latency, ['rate', 'p50', 'p95', 'p99']),
    hot_user: pick(r.hotUser, ['events', 'others_eps', 'others_eps_without']),
    // `complete: false`: the run hit its cap; seconds and users_per_s are then the rate so far.
    resync: pick(r.resync, ['users', 'seconds', 'users_per_s', 'peak_rss_mb', 'live_p99_ms', 'complete']),
    trigger_overhead:
      r.trigger || r.login
        ? {
            ...pick(r.trigger, ['tps_without', 'tps_with', 'ratio', 'tps_with_no_notify', 'ratio_no_notify']),
            ratio_login: r.login?.ratio_login ?? null,
          }
        : null,
    longtx: r.longtx
      ? {
          users: r.longtx.users,
          waves: r.longtx.waves,
          eps: r.longtx.eps,
          last_first: r.longtx.last_first,
          bytes_per_event: r.longtx.bytes_per_event,
        }
      : null,
    outage: r.outage
      ? {
          users: r.outage.users,
          rate: r.outage.rate,
          down_seconds: r.outage.down_seconds,
          seconds_to_empty: r.outage.one_per_change.seconds,
          seconds_to_empty_coalesced: r.outage.coalesced.seconds,
        }
      : null,
    hot_user_coalesced: r.hotUser?.coalesced ?? null,
    targets: targetRows(r).map(({ figure, value, target, measured, met }) => ({
      figure,
      value,
      target,
      measured,
      met,
    })),
    errors: r.errors,
    details: {
      ceiling: r.ceiling,
      drain: r.drain,
      peer: r.peer,
      latency: r.latency,
      hot_user: r.hotUser,
      resync: r.resync,
      trigger_overhead: r.trigger,
      login: r.login,
      longtx: r.longtx,
      outage: r.outage,
      ...r.diagnostics,
    },
  };
}

interface Row {
  figure: string;
  value: string;
  target: string;
  /** The figure as the target states it (a ratio, or the value itself). */
  measured: string;
  met: boolean | null;
}

const fmt = (n: number, unit = '') => `${n.toLocaleString('en-US', { maximumFractionDigits: 2 })}${unit}`;

function ratioRow(
  figure: string,
  value: string,
  num: number | undefined,
  den: number | undefined,
  min: number,
  targetText: string,
): Row {
  if (num === undefined || den === undefined || den === 0)
    return { figure, value, target: targetText, measured: 'n/a', met: null };
  const ratio = num / den;
  return { figure, value, target: targetText, measured: `×${ratio.toFixed(2)}`, met: ratio >= min };
}

function maxRow(figure: string, value: number | undefined, unit: string, max: number, targetText: string): Row {
  if (value === undefined) return { figure, value: 'n/a', target: targetText, measured: 'n/a', met: null };
  return {
    figure,
    value: fmt(value, unit),
    target: targetText,
    measured: `${(value / max).toFixed(2)} of limit`,
    met: value <= max,
  };
}

export function targetRows(r: Results): Row[] {
  const rows: Row[] = [];
  const c = r.ceiling?.rps;
  const d = r.drain?.eps;
  rows.push({
    figure: 'ceiling (raw undici POSTs)',
    value: c === undefined ? 'n/a' : fmt(c, ' req/s'),
    target: '—',
    measured: '—',
    met: null,
  });
  const drainValue = d === undefined ? 'n/a' : fmt(d, ' ev/s');
  rows.push(ratioRow('drain vs ceiling (info logs to a file)', drainValue, d, c, 0.5, '≥ 0.5 × ceiling'));
  rows.push(
    ratioRow(
      'drain vs peer, ordered',
      `peer ${r.peer ? fmt(r.peer.ordered_eps, ' ev/s') : 'n/a'}`,
      d,
      r.peer?.ordered_eps,
      2,
      '≥ 2 × peer ordered',
    ),
  );
  rows.push(
    ratioRow(
      'drain vs peer, unordered best',
      `peer ${r.peer ? fmt(r.peer.unordered_eps, ' ev/s') : 'n/a'}`,
      d,
      r.peer?.unordered_eps,
      1,
      '≥ 1.0 × peer unordered',
    ),
  );
  if (r.drain?.relay_cpu_us_per_event !== undefined) {
    const sender = r.ceiling?.sender_cpu_us_per_request;
    rows.push({
      figure: 'relay CPU per event (drain)',
      value: `${fmt(r.drain.relay_cpu_us_per_event, ' µs')} (+ pg ${fmt(r.drain.pg_cpu_us_per_event ?? 0, ' µs')})`,
      target: sender === undefined ? '≤ 2 × raw undici' : `≤ 2 × raw undici (${fmt(sender, ' µs')}/req)`,
      measured:
        sender === undefined || sender === 0 ? '—' : `×${(r.drain.relay_cpu_us_per_event / sender).toFixed(1)} of raw`,
      met: sender === undefined || sender === 0 ? null : r.drain.relay_cpu_us_per_event <= 2 * sender,
    });
  }
  if (r.drain?.withoutInfoLogs) {
    const cost = 1 - r.drain.eps / r.drain.withoutInfoLogs.eps;
    rows.push({
      figure: 'cost of the default info log line',
      value: `drain without it ${fmt(r.drain.withoutInfoLogs.eps, ' ev/s')}`,
      target: '≤ 10 % of the drain',
      measured: `${(cost * 100).toFixed(1)} %`,
      met: cost <= 0.1,
    });
  }
  const l = r.latency;
  rows.push(maxRow(`latency p50 @${l?.rate ?? 500}/s`, l?.p50, ' ms', 3, '≤ 3 ms'));
  rows.push(maxRow(`latency p99 @${l?.rate ?? 500}/s`, l?.p99, ' ms', 20, '≤ 20 ms'));
  if (l && r.peer) {
    const p = r.peer.latency_ms;
    rows.push({
      figure: 'latency p99 vs peer p99',
      value: `peer p50 ${fmt(p.p50, ' ms')}, p99 ${fmt(p.p99, ' ms')}`,
      target: '< peer',
      measured: `×${(l.p99 / p.p99).toFixed(2)} of peer`,
      met: l.p99 < p.p99,
    });
  } else {
    rows.push({ figure: 'latency p99 vs peer p99', value: 'n/a', target: '< peer', measured: 'n/a', met: null });
  }
  const h = r.hotUser;
  rows.push(
    h
      ? {
          figure: 'hot user: cost to the others',
          value: `${fmt(h.others_eps)} vs ${fmt(h.others_eps_without)} ev/s (relay µs/event ${fmt(h.relay_cpu_us_per_event.with)} vs ${fmt(h.relay_cpu_us_per_event.without)})`,
          target: '≤ 20 %',
          measured: `${(h.cost * 100).toFixed(1)} %`,
          met: h.cost <= 0.2,
        }
      : { figure: 'hot user: cost to the others', value: 'n/a', target: '≤ 20 %', measured: 'n/a', met: null },
  );
  const s = r.resync;
  if (s) {
    // A rate against the ceiling: a quick run on fewer users is judged the same way.
    const ratio = c === undefined || c === 0 ? undefined : s.users_per_s / c;
    rows.push({
      figure: `resync ${fmt(s.users)} users (CLI)`,
      value: s.complete
        ? `${fmt(s.seconds, ' s')} (${fmt(s.users_per_s, ' users/s')})`
        : `INCOMPLETE: ${fmt(s.runs.cli.delivered)} in ${fmt(s.seconds, ' s')} (${fmt(s.users_per_s, ' users/s')})`,
      target: '≥ 0.3 × ceiling',
      measured: ratio === undefined ? 'n/a' : `×${ratio.toFixed(2)}`,
      met: ratio === undefined ? null : ratio >= 0.3,
    });
  } else {
    rows.push({ figure: 'resync', value: 'n/a', target: '≥ 0.3 × ceiling', measured: 'n/a', met: null });
  }
  const lib = s?.runs.library;
  if (lib) {
    rows.push({
      figure: 'resync via library (no CLI progress)',
      value: `${lib.complete ? '' : 'INCOMPLETE: '}${fmt(lib.delivered)} in ${fmt(lib.seconds, ' s')} (${fmt(lib.users_per_s, ' users/s')})`,
      target: '(diagnostic)',
      measured: `live p99 ${fmt(lib.live.p99, ' ms')}`,
      met: null,
    });
  }
  rows.push(maxRow('resync CLI peak RSS', s?.peak_rss_mb, ' MB', 200, '≤ 200 MB'));
  const liveRow = maxRow('resync: live p99', s?.live_p99_ms, ' ms', 100, '≤ 100 ms');
  if (s && s.runs.cli.live.arrived < s.runs.cli.live.measured) {
    liveRow.value += ` (≥: ${s.runs.cli.live.measured - s.runs.cli.live.arrived} never arrived)`;
  }
  rows.push(liveRow);
  const t = r.trigger;
  rows.push(
    t
      ? {
          figure: 'trigger overhead (NOTIFY)',
          value: `${fmt(t.tps_with)} vs ${fmt(t.tps_without)} tps`,
          target: '≥ 0.75',
          measured: `×${t.ratio.toFixed(2)}`,
          met: t.ratio >= 0.75,
        }
      : { figure: 'trigger overhead (NOTIFY)', value: 'n/a', target: '≥ 0.75', measured: 'n/a', met: null },
  );
  rows.push(
    t
      ? {
          figure: 'trigger overhead (--no-notify)',
          value: `${fmt(t.tps_with_no_notify)} vs ${fmt(t.tps_without)} tps`,
          target: '≥ 0.75',
          measured: `×${t.ratio_no_notify.toFixed(2)}`,
          met: t.ratio_no_notify >= 0.75,
        }
      : { figure: 'trigger overhead (--no-notify)', value: 'n/a', target: '≥ 0.75', measured: 'n/a', met: null },
  );
  const lg = r.login;
  rows.push(
    lg
      ? {
          figure: 'login (last_login_at only)',
          value: `${fmt(lg.tps_with)} vs ${fmt(lg.tps_without)} tps`,
          target: '≥ 0.97',
          measured: `×${lg.ratio_login.toFixed(2)}`,
          met: lg.ratio_login >= 0.97,
        }
      : { figure: 'login (last_login_at only)', value: 'n/a', target: '≥ 0.97', measured: 'n/a', met: null },
  );
  const lt = r.longtx;
  rows.push(
    lt
      ? {
          figure: 'old snapshot held: last wave / first',
          value: `${lt.eps.map((e) => fmt(e)).join(', ')} ev/s (no snapshot ×${lt.no_snapshot.last_first.toFixed(2)})`,
          target: '≥ 0.9',
          measured: `×${lt.last_first.toFixed(2)}`,
          met: lt.last_first >= 0.9,
        }
      : { figure: 'old snapshot held: last wave / first', value: 'n/a', target: '≥ 0.9', measured: 'n/a', met: null },
  );
  rows.push(
    lt
      ? {
          figure: 'old snapshot held: suekk_sync storage per event',
          value: `${fmt(lt.bytes_per_event, ' B')} (no snapshot ${fmt(lt.no_snapshot.bytes_per_event, ' B')})`,
          target: '≤ 1 KB',
          measured: `${(lt.bytes_per_event / 1024).toFixed(2)} of limit`,
          met: lt.bytes_per_event <= 1024,
        }
      : {
          figure: 'old snapshot held: suekk_sync storage per event',
          value: 'n/a',
          target: '≤ 1 KB',
          measured: 'n/a',
          met: null,
        },
  );
  const o = r.outage;
  if (o) {
    for (const run of [o.one_per_change, o.coalesced]) {
      rows.push({
        figure: `outage ${o.down_seconds} s @${o.rate}/s: return → empty${run.coalesce ? ' (--coalesce)' : ''}`,
        value: `${fmt(run.changes)} changes, ${fmt(run.calls)} calls; first 2xx after ${fmt(run.first_delivery_s, ' s')}`,
        target: '≤ probe interval + drain',
        measured: fmt(run.seconds, ' s'),
        met: null,
      });
    }
  }
  if (h) {
    rows.push({
      figure: 'hot user with --coalesce',
      value: `others ${fmt(h.coalesced.others_eps)} ev/s; hot user ${fmt(h.coalesced.hot_eps)} ev/s (${fmt(h.hot_eps)} without)`,
      target: '',
      measured: `${fmt(h.coalesced.hot_calls_per_event)} calls/event`,
      met: null,
    });
  }
  if (t) {
    rows.push({
      figure: 'trigger overhead (NOTIFY, a relay looking every ms)',
      value: `${fmt(t.tps_with_relay_looking)} vs ${fmt(t.tps_without)} tps, ${fmt(t.rings_per_s_relay_looking)} rings/s`,
      target: '',
      measured: `×${t.ratio_relay_looking.toFixed(2)}`,
      met: null,
    });
  }
  return rows;
}

export function table(r: Results): string {
  const rows = targetRows(r);
  const head = ['figure', 'value', 'target', 'measured', 'met'];
  const cells = rows.map((row) => [
    row.figure,
    row.value,
    row.target,
    row.measured,
    row.met === null ? '' : row.met ? 'yes' : 'NO',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) =>
    c
      .map((v, i) => v.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(head), widths.map((w) => '─'.repeat(w)).join('  '), ...cells.map(line)].join('\n');
}
