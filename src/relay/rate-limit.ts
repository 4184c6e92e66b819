/** `--max-rps`: spaces attempts evenly so a fragile backend never sees more than N a second. */
import { sleep } from '../sleep.ts';

export class RateLimiter {
  private nextSlot = 0;
  private readonly intervalMs: number;

  constructor(maxRps: number) {
    this.intervalMs = maxRps > 0 ? 1000 / maxRps : 0;
  }

  /** Waits for the next slot; false when the wait was cut short. Unlimited answers at once, not in a promise. */
  take(signal?: AbortSignal): true | Promise<boolean> {
    if (this.intervalMs === 0) return true;
    const now = performance.now();
    const slot = Math.max(now, this.nextSlot);
    this.nextSlot = slot + this.intervalMs;
    return slot > now ? sleep(slot - now, signal) : true;
  }
}
