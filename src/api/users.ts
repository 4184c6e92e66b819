/**
 * The API's SQL against the example users table (sql/examples/users.sql). Plain writes only:
 * the capture trigger turns each into an outbox event, exactly as for any other writer.
 */
import { withTransaction, type Pool } from '../db/pool.ts';
import { DEFAULT_SOURCE } from '../config.ts';
import type { ProfileBody, RegisterBody } from './schemas.ts';

export const USERS_TABLE = DEFAULT_SOURCE.table;

// displayName is the default mapping's expression, so the API and the webhook name a user the same way.
const USER_COLUMNS = `id, email, username, first_name, last_name, avatar, role, is_active, created_at, updated_at,
  ${DEFAULT_SOURCE.columns.displayName} as display_name`;

interface UserRow {
  id: string;
  email: string;
  username: string;
  first_name: string | null;
  last_name: string | null;
  avatar: string | null;
  role: string;
  is_active: boolean;
  created_at: Date;
  updated_at: Date;
  display_name: string;
}

/** What clients see of a user; the password hash is not selected at all. */
export interface UserJson {
  id: string;
  email: string;
  username: string;
  firstName: string | null;
  lastName: string | null;
  displayName: string;
  avatar: string | null;
  role: string;
  isActive: boolean;
  createdAt: string;
  updatedAt: string;
}

function toUserJson(row: UserRow): UserJson {
  return {
    id: row.id,
    email: row.email,
    username: row.username,
    firstName: row.first_name,
    lastName: row.last_name,
    displayName: row.display_name,
    avatar: row.avatar,
    role: row.role,
    isActive: row.is_active,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}

/**
 * Advisory lock classes, in the two-int key space next to the capture doorbell's (1937075051, 1),
 * that serialize registrations of the same email and of the same username, ignoring case.
 */
const EMAIL_LOCK_CLASS = 1937075052;
const USERNAME_LOCK_CLASS = 1937075053;

export type IdentityField = 'email' | 'username';

export type Registration = { user: UserJson } | { taken: IdentityField[] };

/**
 * Inserts a user unless another one, soft-deleted ones included, has the email or the username in
 * any case. The example table's unique indexes on lower(...) refuse such a row on their own (a
 * 23505 the caller maps); an operator's table may have no such index, so the API checks first,
 * under locks on the lowercased values, so that two racing registrations cannot both pass it.
 * Every registration takes both locks in the same statement, so in the same order: none deadlock.
 */
export async function registerUser(pool: Pool, body: RegisterBody, passwordHash: string): Promise<Registration> {
  return withTransaction(pool, async (client) => {
    await client.query(
      `select pg_advisory_xact_lock(${EMAIL_LOCK_CLASS}, hashtext(lower($1))),
              pg_advisory_xact_lock(${USERNAME_LOCK_CLASS}, hashtext(lower($2)))`,
      [body.email, body.username],
    );
    const { rows: existing } = await client.query<{ email_taken: boolean; username_taken: boolean }>(
      `select exists (select 1 from ${USERS_TABLE} where lower(email) = lower($1)) as email_taken,
              exists (select 1 from ${USERS_TABLE} where lower(username) = lower($2)) as username_taken`,
      [body.email, body.username],
    );
    const taken: IdentityField[] = [];
    if (existing[0]!.email_taken) taken.push('email');
    if (existing[0]!.username_taken) taken.push('username');
    if (taken.length > 0) return { taken };
    const { rows } = await client.query<UserRow>(
      `insert into ${USERS_TABLE} (email, username, password, first_name, last_name)
       values ($1, $2, $3, $4, $5)
       returning ${USER_COLUMNS}`,
      [body.email, body.username, passwordHash, body.firstName, body.lastName],
    );
    return { user: toUserJson(rows[0]!) };
  });
}

export interface LoginCandidate {
  id: string;
  role: string;
  passwordHash: string;
  /** Active and not soft-deleted: the only users who may log in. */
  allowed: boolean;
}

/**
 * The user an email or username logs in as, matched ignoring case as registration is. A table
 * that already holds case variants (written before, or by another service) yields the exact match
 * first, then one that may log in, then the oldest.
 */
export async function findLoginCandidate(
  pool: Pool,
  by: IdentityField,
  value: string,
): Promise<LoginCandidate | undefined> {
  const column = by === 'email' ? 'email' : 'username';
  const { rows } = await pool.query<{ id: string; role: string; password: string; allowed: boolean }>(
    `select id, role, password, (is_active and deleted_at is null) as allowed
       from ${USERS_TABLE} where lower(${column}) = lower($1)
      order by ${column} = $1 desc, (is_active and deleted_at is null) desc, created_at, id
      limit 1`,
    [value],
  );
  const row = rows[0];
  return row && { id: row.id, role: row.role, passwordHash: row.password, allowed: row.allowed };
}

/** Touches only last_login_at, which is not in the payload, so a login sends no webhook. */
export async function recordLogin(pool: Pool, id: string): Promise<void> {
  await pool.query(`update ${USERS_TABLE} set last_login_at = now() where id = $1`, [id]);
}

export async function findActiveUser(pool: Pool, id: string): Promise<UserJson | undefined> {
  const { rows } = await pool.query<UserRow>(
    `select ${USER_COLUMNS} from ${USERS_TABLE} where id = $1 and is_active and deleted_at is null`,
    [id],
  );
  return rows[0] && toUserJson(rows[0]);
}

const PROFILE_COLUMNS = { firstName: 'first_name', lastName: 'last_name', avatar: 'avatar' } as const;

/** Undefined when the user stopped being active (or was deleted) since the token was checked. */
export async function updateProfile(pool: Pool, id: string, changes: ProfileBody): Promise<UserJson | undefined> {
  const values: unknown[] = [];
  const sets: string[] = [];
  for (const [field, column] of Object.entries(PROFILE_COLUMNS)) {
    const value = changes[field as keyof ProfileBody];
    if (value === undefined) continue;
    values.push(value);
    sets.push(`${column} = $${values.length}`);
  }
  values.push(id);
  const { rows } = await pool.query<UserRow>(
    `update ${USERS_TABLE} set ${sets.join(', ')}, updated_at = now()
      where id = $${values.length} and is_active and deleted_at is null
      returning ${USER_COLUMNS}`,
    values,
  );
  return rows[0] && toUserJson(rows[0]);
}

/** Soft delete: the row, its email and username stay, so they cannot be registered again. */
export async function softDeleteUser(pool: Pool, id: string): Promise<boolean> {
  const { rowCount } = await pool.query(
    `update ${USERS_TABLE} set deleted_at = now() where id = $1 and deleted_at is null`,
    [id],
  );
  return rowCount === 1;
}
