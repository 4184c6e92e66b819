/**
 * Ctrl-C during resync, push and retry: once finishes the current step and reports what was done;
 * twice leaves at once, with the shell's exit code for an interrupt (130).
 */
import { stopSignals, type StopSignals } from '../signals.ts';

/** `what` is the step a first Ctrl-C lets finish: a batch, a wait. */
export function interruptSignal(what: string): StopSignals {
  return stopSignals({
    onFirst: () => {
      process.stderr.write(`\nStopping after the current ${what} (Ctrl-C again to leave at once)…\n`);
    },
    onSecond: () => process.exit(130),
  });
}
