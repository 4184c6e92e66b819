/**
 * How a command stops on SIGINT or SIGTERM, the one way every command does it: the first signal
 * asks the work to stop (an AbortSignal and a promise), a second one means the stop itself hangs.
 */

export interface StopSignals {
  /** Aborted on the first signal, with the signal's name as its reason. */
  readonly signal: AbortSignal;
  /** Resolves with the first signal's name. */
  readonly received: Promise<NodeJS.Signals>;
  /** Removes the handlers: the command finished on its own. */
  dispose(): void;
}

export interface StopSignalOptions {
  /** Called on the first signal, before `signal` aborts (to say what stopping means). */
  onFirst?(signal: NodeJS.Signals): void;
  /**
   * A second signal while stopping. Without it the handlers go with the first signal, so a second
   * one takes Node's default action and ends a stop that hangs.
   */
  onSecond?(signal: NodeJS.Signals): void;
}

export function stopSignals(options: StopSignalOptions = {}): StopSignals {
  const controller = new AbortController();
  let resolveReceived!: (signal: NodeJS.Signals) => void;
  const received = new Promise<NodeJS.Signals>((resolve) => (resolveReceived = resolve));
  const dispose = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
  // `on`, not `once`: ink's exit hook re-raises a signal that finds no other listener left.
  function onSignal(signal: NodeJS.Signals): void {
    if (controller.signal.aborted) {
      options.onSecond?.(signal);
      return;
    }
    if (options.onSecond === undefined) dispose();
    options.onFirst?.(signal);
    controller.abort(signal);
    resolveReceived(signal);
  }
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return { signal: controller.signal, received, dispose };
}
