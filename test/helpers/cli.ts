/**
 * Runs the real executable, as an operator would, and collects what it printed. Everything it
 * prints is swept for secrets (helpers/secrets.ts): a leak fails the test that started it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { findLeaks, SecretLeakError, secretsGiven, type KnownSecret, type Leak, type LeakKind } from './secrets.ts';

/** The CLI from the sources, so the tests see a change to src/ without a build. */
export const BIN = new URL('../../scripts/suekk-sync-src.js', import.meta.url).pathname;

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  timeoutMs?: number;
  input?: string;
  /** In its own process group, so a test can signal the group as a terminal's Ctrl-C does. */
  detached?: boolean;
  /** More secrets to sweep its output for, besides those in env and flags and the registered ones. */
  secrets?: KnownSecret[];
  /** Credential shapes this command prints on purpose. */
  allowLeaks?: LeakKind[];
}

interface Capture {
  stdout: string;
  stderr: string;
  closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Set once the sweep ran at exit; undefined before. */
  leaks?: Leak[];
  /** A collect() takes over reporting the leaks. */
  collected: boolean;
  /** The command, for messages (its flags may hold the secrets). */
  label: string;
  /** The secrets and credential shapes in what it printed so far. */
  sweep(): Leak[];
}

const captures = new WeakMap<ChildProcess, Capture>();

/** An environment without the developer's own suekk-sync settings leaking into a test. */
export function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of [
    'DATABASE_URL',
    'DATABASE_LISTEN_URL',
    'BACKEND_SYNC_URL',
    'WEBHOOK_SECRET',
    'BACKEND_SYNC_TOKEN',
    'JWT_SECRET',
    'LOG_LEVEL',
    'NODE_OPTIONS',
  ]) {
    delete env[key];
  }
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

export function startCli(args: string[], options: CliOptions = {}): ChildProcess {
  const env = cleanEnv(options.env);
  const child = spawn(process.execPath, [BIN, ...args], {
    env,
    cwd: options.cwd,
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: options.detached ?? false,
  });
  const given = [...secretsGiven(env, args), ...(options.secrets ?? [])];
  const sweepOptions = { secrets: given, allow: options.allowLeaks };
  const capture: Capture = {
    stdout: '',
    stderr: '',
    collected: false,
    sweep: () => [
      ...findLeaks(capture.stdout, 'stdout', sweepOptions),
      ...findLeaks(capture.stderr, 'stderr', sweepOptions),
    ],
    label:
      `suekk-sync ${args.find((a, i) => !a.startsWith('-') && !['--config', '--database-url'].includes(args[i - 1] ?? '')) ?? ''}`.trim(),
    closed: new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal }))),
  };
  captures.set(child, capture);
  // Recorded from the start, so collect() called later still sees everything.
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (capture.stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (capture.stderr += d));
  void capture.closed.then(() => {
    capture.leaks = capture.sweep();
    // Nobody collects this run's output: fail whichever test is running, as tap does for any
    // uncaught error, rather than let the leak pass unseen.
    if (capture.leaks.length > 0 && !capture.collected) {
      const error = new SecretLeakError(capture.leaks, capture.label);
      setImmediate(() => {
        throw error;
      });
    }
  });
  return child;
}

/** What the child printed, once it has exited; rejects when that includes a secret. */
export function collect(child: ChildProcess, timeoutMs = 60_000): Promise<CliResult> {
  const capture = captures.get(child);
  if (capture === undefined) throw new Error('collect() takes a child started by startCli()');
  capture.collected = true;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      // The output goes into the failure only when it is clean.
      const leaks = capture.sweep();
      if (leaks.length > 0) reject(new SecretLeakError(leaks, capture.label));
      else
        reject(
          new Error(`CLI did not finish within ${timeoutMs} ms; stdout: ${capture.stdout}\nstderr: ${capture.stderr}`),
        );
    }, timeoutMs);
    void capture.closed.then(async ({ code, signal }) => {
      clearTimeout(timer);
      // The sweep runs on the same 'close' event; let it finish first.
      while (capture.leaks === undefined) await new Promise((r) => setImmediate(r));
      if (capture.leaks.length > 0) reject(new SecretLeakError(capture.leaks, capture.label));
      else resolve({ code, signal, stdout: capture.stdout, stderr: capture.stderr });
    });
  });
}

/**
 * Starts `suekk-sync serve` (killed at teardown) and waits for its "listening on" line. `finished`
 * is the run's outcome, swept for secrets like any other.
 */
export async function startServe(
  t: { teardown(fn: () => unknown): void },
  args: string[],
  options: CliOptions & { timeoutMs?: number } = {},
): Promise<{ child: ChildProcess; base: string; finished: Promise<CliResult> }> {
  const child = startCli(['serve', ...args], options);
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const finished = collect(child, options.timeoutMs ?? 60_000);
  const base = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: string) => {
      out += chunk;
      const match = /listening on (http:\S+)/.exec(out);
      if (match) resolve(match[1]!);
    });
    child.on('exit', () => reject(new Error(`serve exited early: ${out}`)));
  });
  return { child, base, finished };
}

/** For a teardown: waits for a run whose outcome no longer matters, except a leaked secret. */
export function settled(done: Promise<CliResult>): Promise<void> {
  return done.then(
    () => undefined,
    (err: unknown) => {
      if (err instanceof SecretLeakError) throw err;
    },
  );
}

export async function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const child = startCli(args, options);
  if (options.input !== undefined) child.stdin?.end(options.input);
  else child.stdin?.end();
  return collect(child, options.timeoutMs);
}
