/**
 * What a backend answers is stored (`last_response`, `last_error`), logged and printed by
 * tail-log, push and retry. A debugging backend may echo the request's credentials back, or print
 * its own, so answers are cleaned of every value the sender knows and of anything shaped like a
 * credential before they go anywhere.
 */

const REDACTED = '[redacted]';

const CREDENTIAL_SHAPES: [RegExp, string][] = [
  [/whsec_[A-Za-z0-9+/\\]+=*/g, REDACTED],
  // PHP-style JSON escapes slashes, which base64 and bcrypt hashes contain.
  [/v1,(?:[A-Za-z0-9+]|\\?\/){20,}=*/g, `v1,${REDACTED}`],
  [/\$2[abxy]\$\d{2}\$(?:[.A-Za-z0-9]|\\?\/){22,}/g, REDACTED],
  [/eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g, REDACTED],
  [/\b(Bearer)\s+[A-Za-z0-9._~+/\\-]{8,}=*/gi, `$1 ${REDACTED}`],
  // user:password@ in a URL (a Location header, a connection string in an error page).
  [/(\/\/[^/\s:@"'\\]+:)[^/\s@"'\\]+@/g, `$1${REDACTED}@`],
];

/** The forms a known value may be echoed in: as sent, URL-encoded, and with JSON-escaped slashes. */
function forms(value: string): string[] {
  return [...new Set([value, encodeURIComponent(value), value.replaceAll('/', '\\/')])];
}

/**
 * `text` without any of `known` (the token, the signatures sent, the secrets) or anything shaped
 * like a credential. Values shorter than 4 characters are left alone: they would eat ordinary text.
 */
export function redactCredentials(text: string, known: readonly string[]): string {
  // Most answers are empty or a word: nothing of 4 characters or more can hide in them.
  if (text.length < 4) return text;
  let out = text;
  for (const value of known) {
    if (value.length < 4) continue;
    for (const form of forms(value)) out = out.split(form).join(REDACTED);
  }
  for (const [shape, replacement] of CREDENTIAL_SHAPES) out = out.replace(shape, replacement);
  return out;
}

/**
 * A cut-off answer may end in the first part of a known value, which no search for the whole
 * value finds: such a tail is dropped.
 */
export function dropPartialTail(text: string, known: readonly string[]): string {
  if (text.length < 4) return text;
  for (const value of known) {
    for (const form of forms(value)) {
      for (let n = Math.min(form.length - 1, text.length); n >= 4; n--) {
        if (text.endsWith(form.slice(0, n))) return `${text.slice(0, text.length - n)}${REDACTED}`;
      }
    }
  }
  return text;
}
