/** The backend's sync endpoint as an operator gives it: checked without loading the HTTP client. */
import { UsageError } from '../errors.ts';

const EXAMPLE_URL = 'http://localhost:8080/internal/users/sync';

/** The backend URL, or a UsageError (exit 2) that says what is wrong with it. */
export function parseBackendUrl(raw: string | undefined, name = 'BACKEND_SYNC_URL'): URL {
  if (raw === undefined || raw.trim() === '') {
    throw new UsageError(`${name} is not set; set it to the backend's sync endpoint, e.g. ${EXAMPLE_URL}.`);
  }
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    // The value is not echoed: it may carry credentials.
    throw new UsageError(`${name} is not a valid URL; give a full address such as ${EXAMPLE_URL}.`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`${name} must be an http:// or https:// URL, not ${url.protocol}//.`);
  }
  // undici would silently drop them, sending unauthenticated requests the operator did not intend.
  if (url.username !== '' || url.password !== '') {
    throw new UsageError(
      `${name} must not contain a user name or password; set BACKEND_SYNC_TOKEN for a bearer token instead.`,
    );
  }
  return url;
}
