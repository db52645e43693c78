/**
 * The card-data choke point (issue 16; docs/card-data.md): nothing PAN-shaped is written to any text
 * or JSON column, by any writer (the service, the CLI, an insider's SQL client), on PostgreSQL and on
 * PGlite alike.
 *
 * - `card_data_in_text(text)`: the card-data guard of src/card-data/card-data-guard.ts in PL/pgSQL: a
 *   run of digits separated by anything but ASCII letters, holding 12–19 digits that pass Luhn (whole
 *   or as consecutive groups), or more than 19 digits. A regular-expression pre-scan (12 digits with
 *   no letter between them) answers most values before any loop runs.
 * - `card_data_guard()`: a BEFORE INSERT OR UPDATE row trigger over the table's text-like columns (its
 *   arguments): every string and number (at any depth of a json/jsonb column) and every JSON key is
 *   checked, and a key naming sensitive authentication data (cvc, cvv2, track2, pinBlock…) is refused.
 *   An update checks only the columns it changes. A hit raises SQLSTATE 23514 naming table and
 *   column, never the value. (Timestamps and numbers columns are not read: an ISO timestamp with
 *   microseconds is a 16-digit run.)
 * - `card_data_exempt_columns`: the one list of text-like columns the guard does not read, each with
 *   its reason (digests, signatures, public keys, random tokens, gateway references whose shape is
 *   validated at the adapter, migration names). `card_data_guard_attach(table)` (re)creates a table's
 *   trigger over its text-like columns that are not exempt. A migration adding a text column or a
 *   table calls it; test/card-data/column-coverage.test.ts fails until it does.
 *
 * Also: inbox events can be `rejected` (an Adyen item that could be re-split) and list what the guard
 * `masked` in them.
 */
import type { Knex } from 'knex';

/** Columns the guard does not read, with why. Later migrations add rows and call the attach function. */
export const EXEMPT_COLUMNS: readonly (readonly [table: string, column: string, reason: string])[] = [
  ['knex_migrations', 'name', 'migration file names, written by the migrator only (14-digit timestamps)'],
  ['audit_chain_head', 'hash', 'SHA-256 digest in hex'],
  ['audit_events', 'hash', 'SHA-256 digest in hex'],
  ['audit_events', 'prev_hash', 'SHA-256 digest in hex'],
  ['idempotency_keys', 'request_hash', 'SHA-256 digest in hex of the request'],
  ['data_keys', 'certificate_pem', 'public X.509 certificate (base64 PEM)'],
  ['data_keys', 'public_key_pem', 'public key (base64 PEM)'],
  ['key_approvals', 'jws', 'compact JWS signature (base64url)'],
  ['key_custodians', 'key_thumbprint', 'JWK thumbprint (base64url SHA-256)'],
  ['key_custodians', 'public_key_jwk', 'public key (base64url coordinates)'],
  ['mtls_client_certificates', 'fingerprint_sha256', 'certificate SHA-256 fingerprint (hex with colons)'],
  ['mtls_client_certificates', 'serial', 'random certificate serial number (hex)'],
  ['outbound_deliveries', 'lease_token', 'random UUID lease token'],
  [
    'payments',
    'external_id',
    'gateway payment reference, shape-checked at the adapter (Adyen 16 alphanumerics, Stripe ch_ ids, platform ids refused when they hold card data)',
  ],
  [
    'webhook_inbox',
    'event_key',
    'gateway event key (Adyen pspReference:eventCode:success, Stripe evt_ ids, webhook-id)',
  ],
  ['payment_facts', 'fact_key', 'gateway modification reference (Adyen pspReference, Stripe re_/dp_ ids)'],
];

/**
 * Paths inside JSON columns the guard does not read: the gateway references kept in a stored
 * delivery, the same values as the exempt reference columns above (a real Adyen pspReference is 16
 * digits, Luhn-valid one time in ten).
 */
export const EXEMPT_JSON_PATHS: readonly (readonly [table: string, column: string, path: string[], reason: string])[] =
  [
    ['webhook_inbox', 'payload', ['pspReference'], 'Adyen reference, 16 alphanumerics checked by the adapter'],
    ['webhook_inbox', 'payload', ['originalReference'], 'Adyen reference, 16 alphanumerics checked by the adapter'],
    ['webhook_inbox', 'payload', ['payment', 'id'], 'platform payment id (= payments.external_id)'],
    ['webhook_inbox', 'payload', ['refund', 'id'], 'platform refund id (= payment_facts.fact_key)'],
    ['webhook_inbox', 'payload', ['chargeback', 'id'], 'platform chargeback id (= payment_facts.fact_key)'],
  ];

const GUARD_FUNCTIONS = [
  `create or replace function card_data_luhn(digits text) returns boolean
language plpgsql immutable strict parallel safe as $$
declare
  total int := 0;
  d int;
  n int := length(digits);
begin
  if n = 0 then return false; end if;
  for i in 0 .. n - 1 loop
    d := ascii(substr(digits, n - i, 1)) - 48;
    if i % 2 = 1 then
      d := d * 2;
      if d > 9 then d := d - 9; end if;
    end if;
    total := total + d;
  end loop;
  return total % 10 = 0;
end $$`,
  `create or replace function card_data_in_text(value text) returns boolean
language plpgsql immutable strict parallel safe as $$
declare
  run text;
  groups text[];
  digits text;
begin
  if value !~ '[0-9]([^A-Za-z0-9]*[0-9]){11}' then return false; end if;
  for run in select m[1] from regexp_matches(value, '([0-9]+([^A-Za-z0-9]+[0-9]+)*)', 'g') as m loop
    groups := regexp_split_to_array(run, '[^0-9]+');
    digits := array_to_string(groups, '');
    continue when length(digits) < 12;
    if length(digits) > 19 then return true; end if;
    for i in 1 .. array_length(groups, 1) loop
      digits := '';
      for j in i .. array_length(groups, 1) loop
        digits := digits || groups[j];
        exit when length(digits) > 19;
        if length(digits) >= 12 and card_data_luhn(digits) then return true; end if;
      end loop;
    end loop;
  end loop;
  return false;
end $$`,
  `create or replace function card_data_sad_name(name text) returns boolean
language sql immutable strict parallel safe as $$
  select lower(regexp_replace(name, '[^A-Za-z0-9]', '', 'g')) = any (array[
    'cvv', 'cvv2', 'cvc', 'cvc2', 'cvn', 'cvn2', 'cid', 'csc', 'cav2', 'securitycode', 'cardsecuritycode',
    'cardverificationvalue', 'cardverificationcode', 'track', 'track1', 'track2', 'track3', 'trackdata',
    'magstripe', 'magneticstripe', 'pin', 'pinblock', 'pindata', 'cardcvc', 'cardcvc2', 'cardcvv', 'cardcvv2',
    'cardcid', 'cardpin'])
$$`,
  `create or replace function card_data_in_json(doc jsonb) returns boolean
language plpgsql immutable strict parallel safe as $$
declare
  item jsonb;
  body text;
begin
  if jsonb_typeof(doc) = 'number' and (doc #>> '{}') !~ '^-{0,1}[0-9]+$' then return false; end if;
  if jsonb_typeof(doc) in ('string', 'number') then return card_data_in_text(doc #>> '{}'); end if;
  if jsonb_typeof(doc) not in ('object', 'array') then return false; end if;
  body := doc::text;
  -- Pre-scan of the whole document: without 12 digits unbroken by a letter (and without a \\u escape,
  -- which would put a letter between digits), no leaf can hold a card number; only the keys remain.
  if strpos(body, '\\u') > 0 or body ~ '[0-9]([^A-Za-z0-9]*[0-9]){11}' then
    -- Strings, and numbers written as integers (a fraction such as 8/9 is a number, not a card).
    for item in select jsonb_path_query(doc, 'strict $.** \\? (@.type() == "string" || @.type() == "number")') loop
      continue when jsonb_typeof(item) = 'number' and (item #>> '{}') !~ '^-{0,1}[0-9]+$';
      if card_data_in_text(item #>> '{}') then return true; end if;
    end loop;
    for item in select jsonb_path_query(doc, 'strict $.** \\? (@.type() == "object").keyvalue().key') loop
      if card_data_in_text(item #>> '{}') then return true; end if;
    end loop;
  end if;
  return exists (
    select 1 from jsonb_path_query(doc, 'strict $.** \\? (@.type() == "object").keyvalue().key') as k
     where card_data_sad_name(k #>> '{}'));
end $$`,
  `create or replace function card_data_guard() returns trigger
language plpgsql as $$
declare
  previous jsonb;
  col text;
  val jsonb;
  exempt text[];
begin
  if TG_OP = 'UPDATE' then previous := to_jsonb(OLD); end if;
  for col, val in select key, value from jsonb_each(to_jsonb(NEW)) where key = any (TG_ARGV) loop
    continue when jsonb_typeof(val) in ('null', 'boolean');
    continue when previous is not null and previous -> col = val;
    if jsonb_typeof(val) in ('object', 'array') then
      for exempt in select e.path from card_data_exempt_json_paths e
                     where e.table_name = TG_TABLE_NAME and e.column_name = col loop
        val := val #- exempt;
      end loop;
    end if;
    if card_data_in_json(val) then
      raise exception 'card data refused in %.%', TG_TABLE_NAME, col
        using errcode = '23514', constraint = 'card_data_guard',
              hint = 'Card numbers, track data and security codes are never stored outside the vault (docs/card-data.md).';
    end if;
  end loop;
  return NEW;
end $$`,
  `create or replace function card_data_guard_attach(target text) returns void
language plpgsql as $$
declare
  args text;
begin
  select string_agg(quote_literal(c.column_name), ', ' order by c.column_name)
    into args
    from information_schema.columns c
   where c.table_schema = current_schema() and c.table_name = target
     and (c.data_type in ('text', 'character varying', 'character', 'json', 'jsonb') or c.data_type = 'ARRAY')
     and not exists (select 1 from card_data_exempt_columns e
                      where e.table_name = c.table_name and e.column_name = c.column_name);
  execute format('drop trigger if exists card_data_guard on %I', target);
  if args is null then return; end if;
  execute format(
    'create trigger card_data_guard before insert or update on %I for each row execute function card_data_guard(%s)',
    target, args);
end $$`,
];

/** Tables of the public schema with a text-like column the guard must read. */
export async function tablesToGuard(knex: Knex): Promise<string[]> {
  const result = (await knex.raw(
    `select distinct c.table_name
       from information_schema.columns c
       join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name
      where c.table_schema = current_schema() and t.table_type = 'BASE TABLE'
        and (c.data_type in ('text', 'character varying', 'character', 'json', 'jsonb') or c.data_type = 'ARRAY')
        and not exists (select 1 from card_data_exempt_columns e
                         where e.table_name = c.table_name and e.column_name = c.column_name)
      order by 1`,
  )) as { rows: { table_name: string }[] };
  return result.rows.map((r) => r.table_name);
}

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    alter table webhook_inbox drop constraint webhook_inbox_state_check,
      add constraint webhook_inbox_state_check check (state in ('applied', 'parked', 'failed', 'ignored', 'rejected')),
      add column masked jsonb not null default '[]'`);
  await knex.raw(`
    create table card_data_exempt_columns (
      table_name text not null,
      column_name text not null,
      reason text not null check (length(reason) >= 10),
      primary key (table_name, column_name))`);
  await knex('card_data_exempt_columns').insert(
    EXEMPT_COLUMNS.map(([table, column, reason]) => ({ table_name: table, column_name: column, reason })),
  );
  await knex.raw(`
    create table card_data_exempt_json_paths (
      table_name text not null,
      column_name text not null,
      path text[] not null,
      reason text not null check (length(reason) >= 10),
      primary key (table_name, column_name, path))`);
  await knex('card_data_exempt_json_paths').insert(
    EXEMPT_JSON_PATHS.map(([table, column, path, reason]) => ({
      table_name: table,
      column_name: column,
      path,
      reason,
    })),
  );
  for (const statement of GUARD_FUNCTIONS) await knex.raw(statement);
  for (const table of await tablesToGuard(knex)) {
    await knex.raw('select card_data_guard_attach(?)', [table]);
  }
}

export async function down(knex: Knex): Promise<void> {
  const triggers = (await knex.raw(
    `select c.relname as table_name from pg_trigger t join pg_class c on c.oid = t.tgrelid
      where t.tgname = 'card_data_guard' and not t.tgisinternal`,
  )) as { rows: { table_name: string }[] };
  for (const { table_name: table } of triggers.rows) {
    await knex.raw(`drop trigger card_data_guard on ??`, [table]);
  }
  for (const fn of [
    'card_data_guard_attach(text)',
    'card_data_guard()',
    'card_data_in_json(jsonb)',
    'card_data_sad_name(text)',
    'card_data_in_text(text)',
    'card_data_luhn(text)',
  ]) {
    await knex.raw(`drop function ${fn}`);
  }
  await knex.raw('drop table card_data_exempt_json_paths');
  await knex.raw('drop table card_data_exempt_columns');
  await knex.raw(`update webhook_inbox set state = 'failed' where state = 'rejected'`);
  await knex.raw(`
    alter table webhook_inbox drop column masked, drop constraint webhook_inbox_state_check,
      add constraint webhook_inbox_state_check check (state in ('applied', 'parked', 'failed', 'ignored'))`);
}
