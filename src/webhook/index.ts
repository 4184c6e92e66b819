/** The light entry for backends (`suekk-sync/webhook`): build, sign, verify and send webhooks. */
export { buildWebhookBody, WEBHOOK_ACTIONS, WEBHOOK_BODY_KEYS } from './body.ts';
export type { WebhookAction, WebhookBodyKey } from './body.ts';
export {
  generateSecret,
  parseSecrets,
  signWebhook,
  verifyWebhook,
  WebhookSecret,
  WebhookVerificationError,
} from './signature.ts';
export type { SignWebhookOptions, VerifyWebhookOptions, WebhookHeaders } from './signature.ts';
export { parseBackendUrl } from './backend-url.ts';
export { createWebhookSender, parseRetryAfter } from './sender.ts';
export type { AttemptKind, AttemptOutcome, WebhookRequest, WebhookSender, WebhookSenderOptions } from './sender.ts';
