/**
 * JWTs as the Go auth service issues them: HS256 with JWT_SECRET, claims `sub` (user id), `role`,
 * `iat`, `exp`, so the backend verifies ours with the secret it already has. The algorithm is
 * pinned on verification: a token that names `none` or another algorithm is refused, and so is
 * one issued in the future.
 */
import { jwtVerify, SignJWT } from 'jose';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Below this, HS256 tokens could be brute-forced offline from any one token. */
export const MIN_JWT_SECRET_BYTES = 32;

/**
 * How far ahead of our clock a token's `iat` may be: another auth service's clock may run a little
 * fast. Beyond that the token is refused: a future `iat` makes it look fresh to every check of a
 * token's age, long after it was made.
 */
const IAT_CLOCK_SKEW_SECONDS = 5;

export class TokenService {
  readonly #key: Uint8Array;
  readonly #expiresInSeconds: number;

  constructor(secret: string, expiresInSeconds: number) {
    if (Buffer.byteLength(secret, 'utf8') < MIN_JWT_SECRET_BYTES) {
      throw new RangeError(`the JWT secret must be at least ${MIN_JWT_SECRET_BYTES} bytes`);
    }
    this.#key = new TextEncoder().encode(secret);
    this.#expiresInSeconds = expiresInSeconds;
  }

  issue(user: { id: string; role: string }): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ role: user.role })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(user.id)
      .setIssuedAt(now)
      .setExpirationTime(now + this.#expiresInSeconds)
      .sign(this.#key);
  }

  /**
   * The user id of a valid token, or undefined for anything else (forged, expired, malformed).
   * The role claim is for the backend; this API reads the role from the users row.
   */
  async verify(token: string): Promise<string | undefined> {
    try {
      const { payload } = await jwtVerify(token, this.#key, {
        algorithms: ['HS256'],
        requiredClaims: ['sub', 'iat', 'exp'],
      });
      // The id goes into a uuid comparison; anything else would be a 500 there instead of a 401.
      if (typeof payload.sub !== 'string' || !UUID.test(payload.sub)) return undefined;
      // jose checks iat only against a maximum token age, which would also cap the lifetime of
      // tokens the other auth service issues; a future iat is checked here instead.
      if (payload.iat! > Date.now() / 1000 + IAT_CLOCK_SKEW_SECONDS) return undefined;
      return payload.sub;
    } catch {
      return undefined;
    }
  }
}
