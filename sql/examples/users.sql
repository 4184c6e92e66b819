-- The reference auth service's users table, as its GORM model lays it out. Not a migration:
-- suekk-sync installs onto an existing table; apply this only for a demo or a fresh auth database.
create table if not exists public.users (
  id            uuid primary key default gen_random_uuid(),
  email         text not null,
  username      text not null,
  password      text not null,            -- bcrypt hash
  first_name    text,
  last_name     text,
  avatar        text,
  role          text not null default 'user',
  is_active     boolean not null default true,
  last_login_at timestamptz,
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now(),
  deleted_at    timestamptz
);

-- One account per email and per username whatever the case: Alice@x.io and alice@x.io are one
-- address to a person, and a look-alike name must not take a soft-deleted user's. Indexes on
-- lower(...) rather than citext, so the columns keep their type and the extension is not needed;
-- they also serve the API's case-insensitive lookups. A soft-deleted row keeps its claim.
create unique index if not exists users_email_lower_key on public.users (lower(email));
create unique index if not exists users_username_lower_key on public.users (lower(username));
