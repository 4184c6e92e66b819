/**
 * The LISTEN connection (pg-listen), which only wakes the relay: a notification missed while
 * disconnected costs latency, never an event, because the relay drains on every (re)connect and
 * polls as a backstop.
 */
import pgListen, { type Subscriber } from 'pg-listen';
import { NOTIFY_CHANNEL } from '../db/schema.ts';
import { UsageError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { redactUrl, type Pool } from '../db/pool.ts';

// pg-listen is CommonJS with an `exports.default`: Node's ESM import hands over the whole module.
const createSubscriber = pgListen.default;

export interface ListenerHandlers {
  /** Something may be due: drain. Also called after every reconnect. */
  onWake: () => void;
  /** A non-empty payload: a control message such as `pause` or `resume`. */
  onControl: (payload: string) => void;
  /** The LISTEN connection dropped (the server may have gone away). */
  onLost?: (err: Error) => void;
}

export class Listener {
  private subscriber: Subscriber | undefined;
  private closing = false;
  private selfCheckToken: string | undefined;
  private selfCheckResolve: (() => void) | undefined;
  connected = false;

  constructor(
    private readonly url: string,
    private readonly logger: Logger,
    private readonly handlers: ListenerHandlers,
  ) {}

  async start(): Promise<void> {
    await this.open();
  }

  private async open(): Promise<void> {
    const subscriber = createSubscriber(
      { connectionString: this.url, application_name: 'suekk-sync relay listen' },
      {
        // Ride out a database restart of any length: the poll backstop delivers meanwhile.
        retryLimit: Infinity,
        retryTimeout: 0,
        retryInterval: (attempt) => Math.min(5_000, 250 * 2 ** attempt),
        paranoidChecking: 10_000,
        parse: (payload: string) => payload,
      },
    );
    subscriber.notifications.on(NOTIFY_CHANNEL, (payload: unknown) => {
      const text = typeof payload === 'string' ? payload : '';
      if (text === '') this.handlers.onWake();
      else if (this.selfCheckToken !== undefined && text === this.selfCheckToken) this.selfCheckResolve?.();
      else this.handlers.onControl(text);
    });
    subscriber.events.on('reconnect', (attempt) => {
      this.connected = false;
      if (attempt === 1) {
        this.logger.warn('Lost the LISTEN connection to the database; reconnecting');
        this.handlers.onLost?.(new Error('the LISTEN connection was lost'));
      }
    });
    let reconnecting = false;
    subscriber.events.on('reconnect', () => (reconnecting = true));
    subscriber.events.on('connected', () => {
      this.connected = true;
      // pg-listen also says "connected" for the first connection; only a comeback is news.
      if (!reconnecting) return;
      reconnecting = false;
      this.logger.info('LISTEN connection is back; draining what arrived meanwhile');
      this.handlers.onWake();
    });
    subscriber.events.on('error', (err) => {
      this.connected = false;
      if (this.closing) return;
      this.logger.warn({ err: { message: err.message } }, 'The LISTEN connection failed; opening a new one');
      this.handlers.onLost?.(err);
      void subscriber.close().catch(() => undefined);
      setTimeout(() => {
        if (!this.closing) void this.open().catch((e: Error) => this.subscriberFailed(e));
      }, 1_000).unref();
    });
    this.subscriber = subscriber;
    await subscriber.connect();
    await subscriber.listenTo(NOTIFY_CHANNEL);
    this.connected = true;
  }

  private subscriberFailed(err: Error): void {
    this.logger.warn({ err: { message: err.message } }, 'Could not open the LISTEN connection yet; polling meanwhile');
    setTimeout(() => {
      if (!this.closing) void this.open().catch((e: Error) => this.subscriberFailed(e));
    }, 2_000).unref();
  }

  /**
   * Sends a notification from another connection and waits for it: behind a transaction-pooling
   * PgBouncer LISTEN silently never delivers, and the relay would quietly fall back to polling.
   */
  async selfCheck(pool: Pool, relayId: string, timeoutMs = 5_000): Promise<void> {
    this.selfCheckToken = `selfcheck:${relayId}`;
    const arrived = new Promise<void>((resolve) => (this.selfCheckResolve = resolve));
    await pool.query('select pg_notify($1, $2)', [NOTIFY_CHANNEL, this.selfCheckToken]);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    const result = await Promise.race([arrived, timedOut]);
    clearTimeout(timer);
    this.selfCheckToken = undefined;
    if (result === 'timeout') {
      throw new UsageError(
        `LISTEN does not work on the connection to ${redactUrl(this.url)}: a notification sent from another connection never arrived (a transaction-pooling PgBouncer does this); set DATABASE_LISTEN_URL to a direct or session-pooled connection.`,
      );
    }
  }

  async stop(): Promise<void> {
    this.closing = true;
    this.connected = false;
    await this.subscriber?.close().catch(() => undefined);
  }
}
