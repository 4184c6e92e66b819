/**
 * Request and response schemas of the API. Fastify's ajv validates requests against
 * them, so handlers can trust the shapes; response schemas make fast-json-stringify write only the
 * listed keys, a second guard (after toUserJson) against a password hash ever reaching a client.
 */

/** bcrypt reads 72 bytes and ignores the rest, so longer passwords would be silently shortened. */
const PASSWORD_MIN_BYTES = 8;
export const PASSWORD_MAX_BYTES = 72;

/**
 * Characters a name must not contain: controls (ESC, BEL, ...), line and paragraph separators, and
 * the bidirectional marks, embeddings, overrides and isolates, which reorder the text shown around
 * a name (a webhook's displayName ends up in other people's screens).
 */
const NAME_FORBIDDEN = /[\p{Cc}\p{Zl}\p{Zp}\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/u;

/**
 * A character that shows: not white space, not one of the invisible "default ignorable" code points
 * (zero-width space and joiners, soft hyphen, word joiner, Hangul fillers, variation selectors...),
 * not a control, not the blank braille pattern. ajv compiles patterns with the `u` flag.
 */
const VISIBLE_CHARACTER = '[^\\p{White_Space}\\p{Default_Ignorable_Code_Point}\\p{Cc}\\u2800]';

/**
 * Formats ajv does not know. Passed as ajv's `formats` option; the names avoid the ones
 * ajv-formats registers afterwards (it has a permissive "password" and "url"), which would win.
 */
export const customFormats = {
  'bcrypt-password': (value: string): boolean => {
    const bytes = Buffer.byteLength(value, 'utf8');
    return bytes >= PASSWORD_MIN_BYTES && bytes <= PASSWORD_MAX_BYTES;
  },
  'display-text': (value: string): boolean => !NAME_FORBIDDEN.test(value),
  'http-url': (value: string): boolean => {
    try {
      const url = new URL(value);
      return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
    } catch {
      return false;
    }
  },
};

/** Readable messages for the checks ajv would otherwise explain with its own keyword jargon. */
export const FORMAT_MESSAGES: Record<string, string> = {
  email: 'must be a valid email address',
  'bcrypt-password': `must be ${PASSWORD_MIN_BYTES} to ${PASSWORD_MAX_BYTES} bytes long (UTF-8)`,
  'http-url': 'must be an http or https URL',
  'display-text': 'must not contain control characters or bidirectional overrides',
};

export const PATTERN_MESSAGES: Record<string, string> = {
  username: 'may contain only letters, digits, _, . and -',
  firstName: 'must contain a visible character',
  lastName: 'must contain a visible character',
};

const email = { type: 'string', maxLength: 254, format: 'email' } as const;
const username = { type: 'string', minLength: 3, maxLength: 32, pattern: '^[A-Za-z0-9_.-]*$' } as const;
const personName = {
  type: 'string',
  minLength: 1,
  maxLength: 100,
  pattern: VISIBLE_CHARACTER,
  format: 'display-text',
} as const;
const avatar = { type: 'string', nullable: true, maxLength: 2048, format: 'http-url' } as const;

export interface RegisterBody {
  email: string;
  username: string;
  password: string;
  firstName: string;
  lastName: string;
}

export const registerBody = {
  type: 'object',
  additionalProperties: false,
  required: ['email', 'username', 'password', 'firstName', 'lastName'],
  properties: {
    email,
    username,
    password: { type: 'string', format: 'bcrypt-password' },
    firstName: personName,
    lastName: personName,
  },
} as const;

export interface LoginBody {
  email?: string;
  username?: string;
  password: string;
}

// Login checks no registration rules: a user the Go service created under other rules must still
// get in, and a malformed identifier simply matches nobody. The bounds only keep lookups cheap.
export const loginBody = {
  type: 'object',
  additionalProperties: false,
  required: ['password'],
  properties: {
    email: { type: 'string', minLength: 1, maxLength: 254 },
    username: { type: 'string', minLength: 1, maxLength: 254 },
    password: { type: 'string', minLength: 1, maxLength: 1024 },
  },
} as const;

export interface ProfileBody {
  firstName?: string;
  lastName?: string;
  avatar?: string | null;
}

export const profileBody = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: { firstName: personName, lastName: personName, avatar },
} as const;

const nullableString = { type: 'string', nullable: true } as const;

export const userJson = {
  type: 'object',
  required: [
    'id',
    'email',
    'username',
    'firstName',
    'lastName',
    'displayName',
    'avatar',
    'role',
    'isActive',
    'createdAt',
    'updatedAt',
  ],
  properties: {
    id: { type: 'string' },
    email: { type: 'string' },
    username: { type: 'string' },
    firstName: nullableString,
    lastName: nullableString,
    displayName: { type: 'string' },
    avatar: nullableString,
    role: { type: 'string' },
    isActive: { type: 'boolean' },
    createdAt: { type: 'string' },
    updatedAt: { type: 'string' },
  },
} as const;

export const tokenJson = {
  type: 'object',
  required: ['token'],
  properties: { token: { type: 'string' } },
} as const;

export const registeredJson = {
  type: 'object',
  required: ['user', 'token'],
  properties: { user: userJson, token: { type: 'string' } },
} as const;
