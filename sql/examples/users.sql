-- The reference auth service's users table, as its GORM model lays it out. Not a migration:
-- suekk-sync installs onto an existing table; apply this only for a demo or a fresh auth database.
create table if not exists public.users (
  id            uuid primary key default gen_random_uuid(),
  email         text not null unique,
  username      text not null unique,
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
