/**
 * suekk-sync as a library. Backends import the webhook helpers (verifyWebhook above all); tools
 * embed the relay, install and the operator functions the CLI is a thin shell over.
 */
export {
  buildWebhookBody,
  createWebhookSender,
  generateSecret,
  parseBackendUrl,
  parseSecrets,
  signWebhook,
  verifyWebhook,
  WebhookSecret,
  WebhookVerificationError,
  WEBHOOK_BODY_KEYS,
} from './webhook/index.ts';
export type { AttemptOutcome, WebhookAction, WebhookSender } from './webhook/index.ts';

export { DEFAULT_RELAY, DEFAULT_SOURCE, loadSettings } from './config.ts';
export type { RelaySettings, Settings, SourceMapping } from './config.ts';
export { UsageError, WorkFailed } from './errors.ts';
export { createLogger } from './logger.ts';
export { createPool } from './db/pool.ts';

export { install, uninstall } from './capture/install.ts';
export type { InstallOptions, InstallResult } from './capture/install.ts';

export { Relay } from './relay/relay.ts';
export type { RelayOptions, DeliveryEvent } from './relay/relay.ts';
export { startRelay } from './relay/start.ts';

export { resync, resyncDryRun } from './ops/resync.ts';
export { push } from './ops/push.ts';
export { retry, skip } from './ops/retry.ts';

export { createApiServer } from './api/server.ts';
export { createReceiver } from './dev/receiver.ts';
