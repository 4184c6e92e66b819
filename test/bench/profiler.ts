/**
 * `--profile <prefix>`: V8 profiles of the bench process over the measured drain runs and the
 * ceiling's windows only (not set-up, prefill or module loading), one pair of files per run:
 *   <prefix>.<run>.cpuprofile   CPU samples (1 ms);
 *   <prefix>.<run>.heapprofile  allocation samples, objects already collected included, so it
 *                               says who allocates (what the garbage collector's share is spent on).
 * Open them in Chrome DevTools, or summarise them with test/bench/profile-summary.ts (the
 * ceiling's are the baseline: raw undici on the same machine).
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';

export class Profiler {
  private session: Session | undefined;
  readonly files: string[] = [];

  constructor(private readonly prefix: string) {}

  async start(): Promise<void> {
    this.session = new Session();
    this.session.connect();
    await this.session.post('Profiler.enable');
    await this.session.post('Profiler.setSamplingInterval', { interval: 1000 });
    // The include… flags (V8 ≥ 10.x, not in @types/node yet) keep samples of objects the GC
    // already freed: without them the profile shows only what survived, not what was allocated.
    await this.session.post('HeapProfiler.startSampling', {
      samplingInterval: 16 * 1024,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    } as { samplingInterval: number });
    await this.session.post('Profiler.start');
  }

  async stop(label: string): Promise<string | undefined> {
    const session = this.session;
    if (!session) return undefined;
    this.session = undefined;
    const { profile } = await session.post('Profiler.stop');
    const heap = await session.post('HeapProfiler.stopSampling');
    session.disconnect();
    const file = `${this.prefix}.${label}.cpuprofile`;
    writeFileSync(file, JSON.stringify(profile));
    writeFileSync(`${this.prefix}.${label}.heapprofile`, JSON.stringify(heap.profile));
    this.files.push(file);
    return file;
  }
}
