/**
 * How a command stops on SIGINT or SIGTERM, the one way every command does it: the first signal
 * asks the work to stop (an AbortSignal and a promise), a second one means the stop itself hangs.
 */

export interface StopSignals {
  /** Aborted on the first signal, with the signal's name (or the reason given to `stop`) as its reason. */
  readonly signal: AbortSignal;
  /** Resolves with the first signal's name, or the reason given to `stop`. */
  readonly received: Promise<string>;
  /**
   * Stops as a signal does, for a reason that is no signal (the reader of the output went away):
   * the first stop when nothing stopped yet, else what a second signal does (nothing without `onSecond`).
   */
  stop: (reason: string) => void;
  /** Removes the handlers: the command finished on its own. */
  dispose: () => void;
}

export interface StopSignalOptions {
  /** Called on the first signal, before `signal` aborts (to say what stopping means). */
  onFirst?(reason: string): void;
  /**
   * A second signal while stopping. Without it the handlers go with the first signal, so a second
   * one takes Node's default action and ends a stop that hangs. `'ignore'` keeps the handlers until
   * `dispose` and lets a second signal change nothing: a command with an ink view needs that, as
   * ink's exit hook re-raises a signal that finds no other listener left.
   */
  onSecond?: ((reason: string) => void) | 'ignore';
}

export function stopSignals(options: StopSignalOptions = {}): StopSignals {
  const controller = new AbortController();
  let resolveReceived!: (reason: string) => void;
  const received = new Promise<string>((resolve) => (resolveReceived = resolve));
  const dispose = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
  const { onSecond } = options;
  // `on`, not `once`: the handlers stay for a second signal unless `onSecond` leaves it to Node.
  function onSignal(reason: string): void {
    if (controller.signal.aborted) {
      if (typeof onSecond === 'function') onSecond(reason);
      return;
    }
    if (onSecond === undefined) dispose();
    options.onFirst?.(reason);
    controller.abort(reason);
    resolveReceived(reason);
  }
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return { signal: controller.signal, received, stop: onSignal, dispose };
}
