/**
 * The suekk-sync executable (bin/suekk-sync.js runs its compiled form): builds the program for the
 * command line, runs it, and turns what went wrong into one line and an exit code.
 */
import { buildProgram } from './program.ts';
import { endQuietlyWhenOutputCloses, reportError } from './run.ts';

endQuietlyWhenOutputCloses();
try {
  const program = await buildProgram(process.argv.slice(2));
  await program.parseAsync(process.argv);
} catch (err) {
  // Exit now: a half-started component must not keep a failed command alive.
  process.exit(reportError(err));
}
