/** The bench process's handle on the receiver process: start it, ask it things over IPC, stop it. */
import { fork, type ChildProcess } from 'node:child_process';
import type {
  LatencyReport,
  ReceiverRequest,
  ReceiverResponse,
  ReceiverStats,
  WriterSpec,
  WriterStats,
} from './protocol.ts';

type RequestBody = ReceiverRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

export class Receiver {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
  ) {
    child.on('message', (msg: ReceiverResponse) => {
      const w = this.waiting.get(msg.id);
      if (!w) return;
      this.waiting.delete(msg.id);
      if (msg.ok) w.resolve(msg.result);
      else w.reject(new Error(`receiver: ${msg.error}`));
    });
    child.on('exit', (code, signal) => {
      for (const w of this.waiting.values()) w.reject(new Error(`the receiver exited (${signal ?? code})`));
      this.waiting.clear();
    });
  }

  static async start(): Promise<Receiver> {
    const child = fork(new URL('./receiver-process.ts', import.meta.url).pathname, [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    });
    const port = await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`the receiver exited with ${code} before listening`)));
      child.stdout!.once('data', (d: Buffer) => resolve((JSON.parse(String(d)) as { port: number }).port));
    });
    return new Receiver(child, port);
  }

  get pid(): number {
    return this.child.pid!;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/internal/users/sync`;
  }

  private ask<T>(body: RequestBody): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ ...body, id });
    });
  }

  stats(): Promise<ReceiverStats> {
    return this.ask({ type: 'stats' });
  }

  /** Clears counters and latency state; `tag` counts bodies containing it apart. */
  reset(options: { tag?: string; markers?: boolean } = {}): Promise<void> {
    return this.ask({ type: 'reset', ...options });
  }

  /** Answer every request with `status` (the backend is down), or normally again with null. */
  refuse(status: number | null): Promise<void> {
    return this.ask({ type: 'refuse', status });
  }

  startWriter(spec: WriterSpec): Promise<void> {
    return this.ask({ type: 'writer-start', spec });
  }

  stopWriter(): Promise<WriterStats> {
    return this.ask({ type: 'writer-stop' });
  }

  latency(waitMs: number): Promise<LatencyReport> {
    return this.ask({ type: 'latency', waitMs });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3_000);
    await exited;
    clearTimeout(timer);
  }
}
