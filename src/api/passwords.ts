/**
 * bcrypt at cost 10, the Go default, so hashes the Go auth service wrote ($2a$) verify here and
 * ours ($2b$, the same algorithm) verify there.
 */
import { randomBytes } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { PASSWORD_MAX_BYTES } from './schemas.ts';

const BCRYPT_COST = 10;

export function hashPassword(password: string): Promise<string> {
  return bcrypt.hash(password, BCRYPT_COST);
}

/**
 * Checks a login. Always runs one bcrypt comparison, against a dummy hash of the same cost when
 * there is no user, so the answer takes as long for an unknown user as for a wrong password.
 */
export class PasswordChecker {
  readonly #dummy: Promise<string>;

  constructor() {
    // Nobody knows its password, and it is never compared with an outcome that counts.
    this.#dummy = hashPassword(randomBytes(16).toString('hex'));
  }

  async check(password: string, hash: string | undefined): Promise<boolean> {
    const target = hash ?? (await this.#dummy);
    let matches: boolean;
    try {
      matches = await bcrypt.compare(password, target);
    } catch {
      matches = false; // a malformed hash in the table is a failed login, not a 500
    }
    // bcrypt ignores bytes after the 72nd, so a longer password could match a hash of its prefix.
    const tooLong = Buffer.byteLength(password, 'utf8') > PASSWORD_MAX_BYTES;
    return matches && hash !== undefined && !tooLong;
  }
}
