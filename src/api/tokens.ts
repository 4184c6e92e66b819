/**
 * JWTs as the Go auth service issues them: HS256 with JWT_SECRET, claims `sub` (user id), `role`,
 * `iat`, `exp`, so the backend verifies ours with the secret it already has. The algorithm is
 * pinned on verification: a token that names `none` or another algorithm is refused.
 */
import { jwtVerify, SignJWT } from 'jose';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class TokenService {
  readonly #key: Uint8Array;
  readonly #expiresInSeconds: number;

  constructor(secret: string, expiresInSeconds: number) {
    if (secret === '') throw new TypeError('the JWT secret must not be empty');
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
      return payload.sub;
    } catch {
      return undefined;
    }
  }
}
