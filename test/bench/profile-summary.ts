/**
 * Summarises a V8 CPU profile (`node --cpu-prof`) of a bench run: self time by function and by
 * where the code lives (a file of src/, a package of node_modules, node's internals, GC, idle),
 * so "where does the relay's time go" has a one-screen answer.
 *
 *   node --import tsx test/bench/run.ts --quick --only drain --no-info-logs --profile /tmp/drain
 *   node --import tsx test/bench/profile-summary.ts /tmp/drain.drain_*.cpuprofile [--top 30]
 *   node --import tsx test/bench/profile-summary.ts /tmp/drain.drain_*.heapprofile   (who allocates)
 *
 * `--profile` records the measured drain runs only (see profiler.ts). A whole-process profile
 * (`node --cpu-prof …`) works too, set-up and module loading included.
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface HeapNode {
  callFrame: CallFrame;
  selfSize: number;
  children: HeapNode[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Where a frame's code lives, coarse enough to add up. */
function area(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (url === '') {
    if (functionName === '(garbage collector)') return '(gc)';
    if (functionName === '(idle)') return '(idle)';
    if (functionName === '(program)') return '(program: native, not attributed)';
    return '(native)';
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return `pkg ${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  if (url.startsWith('node:'))
    return url
      .replace(/^node:internal\/(?:[^/]+\/)?/, 'node:')
      .split('/')[0]!
      .replace(/\.js$/, '');
  const src = url.indexOf('/src/');
  if (src >= 0) return url.slice(src + 1);
  const test = url.indexOf('/test/');
  if (test >= 0) return url.slice(test + 1);
  return url;
}

/** Allocation profiles: bytes allocated by function and by area (objects since freed included). */
function heapSummary(files: string[], top: number): void {
  const byArea = new Map<string, number>();
  const byFunction = new Map<string, number>();
  let total = 0;
  const walk = (n: HeapNode) => {
    if (n.selfSize > 0) {
      const a = area(n.callFrame);
      const line =
        n.callFrame.url.includes('/node_modules/') || n.callFrame.url.startsWith('node:')
          ? `:${n.callFrame.lineNumber + 1}`
          : '';
      const key = `${n.callFrame.functionName || '(anonymous)'}  ${a}${line}`;
      byArea.set(a, (byArea.get(a) ?? 0) + n.selfSize);
      byFunction.set(key, (byFunction.get(key) ?? 0) + n.selfSize);
      total += n.selfSize;
    }
    for (const c of n.children) walk(c);
  };
  for (const file of files) walk((JSON.parse(readFileSync(file, 'utf8')) as { head: HeapNode }).head);
  const pct = (b: number) => `${((b / total) * 100).toFixed(1).padStart(5)} %`;
  process.stdout.write(
    `allocations: ${(total / 2 ** 20).toFixed(1)} MB sampled (freed objects included)\n\nbytes allocated by area\n`,
  );
  for (const [a, b] of [...byArea].sort((x, y) => y[1] - x[1]).slice(0, top))
    process.stdout.write(`  ${pct(b)}  ${a}\n`);
  process.stdout.write('\nbytes allocated by function\n');
  for (const [f, b] of [...byFunction].sort((x, y) => y[1] - x[1]).slice(0, top))
    process.stdout.write(`  ${pct(b)}  ${f}\n`);
}

function main(): void {
  const args = process.argv.slice(2);
  const topAt = args.indexOf('--top');
  const top = topAt >= 0 ? Number(args[topAt + 1]) : 25;
  const files = args.filter((a, i) => !a.startsWith('--') && i !== topAt + 1);
  if (files.length === 0) {
    process.stderr.write('usage: profile-summary.ts <file.cpuprofile | file.heapprofile>… [--top N]\n');
    process.exit(2);
  }
  if (files.every((f) => f.endsWith('.heapprofile'))) {
    heapSummary(files, top);
    return;
  }
  // Several profiles (one per drain run) add up: self time per frame, summed.
  const self: { frame: CallFrame; t: number }[] = [];
  // Total (inclusive) time of the project's own functions: each sample counts once for every
  // distinct src/ or test/ function on its stack — "what does deliver() cost, all in".
  const inclusive = new Map<string, number>();
  for (const file of files) {
    const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const perNode = new Map<number, number>();
    for (let i = 0; i < profile.samples.length; i++) {
      const id = profile.samples[i]!;
      perNode.set(id, (perNode.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
    }
    for (const [id, t] of perNode) self.push({ frame: byId.get(id)!.callFrame, t });
    const parent = new Map<number, number>();
    for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    for (const [id, t] of perNode) {
      const seen = new Set<string>();
      for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
        const frame = byId.get(at)!.callFrame;
        const a = area(frame);
        if (!a.startsWith('src/') && !a.startsWith('pkg ')) continue;
        const key = `${frame.functionName || '(anonymous)'}  ${a}`;
        if (seen.has(key)) continue;
        seen.add(key);
        inclusive.set(key, (inclusive.get(key) ?? 0) + t);
      }
    }
  }
  const total = self.reduce((a, s) => a + s.t, 0);
  const idle = self.filter((s) => s.frame.functionName === '(idle)').reduce((a, s) => a + s.t, 0);
  const busy = total - idle;

  const byArea = new Map<string, number>();
  const byFunction = new Map<string, number>();
  for (const { frame, t } of self) {
    const a = area(frame);
    byArea.set(a, (byArea.get(a) ?? 0) + t);
    if (frame.functionName === '(idle)') continue;
    // Line numbers of tsx-compiled files (src/, test/) are not the source's: left out.
    const line =
      frame.url.includes('/node_modules/') || frame.url.startsWith('node:') ? `:${frame.lineNumber + 1}` : '';
    const key = `${frame.functionName || '(anonymous)'}  ${a}${line}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + t);
  }
  const pct = (t: number) => `${((t / busy) * 100).toFixed(1).padStart(5)} %`;
  process.stdout.write(
    `profile: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s busy (${((busy / total) * 100).toFixed(0)} %); shares below are of busy time\n\n`,
  );
  process.stdout.write('self time by area\n');
  for (const [a, t] of [...byArea]
    .filter(([a]) => a !== '(idle)')
    .sort((x, y) => y[1] - x[1])
    .slice(0, top)) {
    process.stdout.write(`  ${pct(t)}  ${a}\n`);
  }
  process.stdout.write('\ntotal time (self + callees) of src/ and package functions\n');
  for (const [f, t] of [...inclusive].sort((x, y) => y[1] - x[1]).slice(0, top)) {
    process.stdout.write(`  ${pct(t)}  ${f}\n`);
  }
  process.stdout.write('\nself time by function\n');
  for (const [f, t] of [...byFunction].sort((x, y) => y[1] - x[1]).slice(0, top)) {
    process.stdout.write(`  ${pct(t)}  ${f}\n`);
  }
}

// Piped into `head`: stop quietly.
process.stdout.on('error', () => process.exit(0));
main();
