/** Settings for library calls in tests: the test database, the receiver, small delays. */
import { DEFAULT_SOURCE, type Settings } from '../../src/config.ts';
import { FAST_RELAY } from './relay.ts';

/** Known secret values for tests; every captured output is swept for them (helpers/secrets.ts). */
export { TEST_SECRETS } from './secrets.ts';

export function testSettings(
  databaseUrl: string,
  backendSyncUrl?: string,
  overrides: Partial<Settings> = {},
): Settings {
  return {
    databaseUrl,
    databaseListenUrl: undefined,
    backendSyncUrl: backendSyncUrl === undefined ? undefined : new URL(backendSyncUrl),
    webhookSecrets: [],
    backendSyncToken: undefined,
    jwtSecret: undefined,
    logLevel: 'silent',
    source: DEFAULT_SOURCE,
    relay: FAST_RELAY,
    configFile: undefined,
    ...overrides,
  };
}
