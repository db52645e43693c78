/**
 * The database card-data guard (20261206000100) reads JSON escapes as separators and finds a PAN with
 * digits glued to it, as src/card-data/card-data-guard.ts does (issue 16, review findings 3 and 5).
 *
 * - `card_data_in_json(doc)` pre-scanned `doc::text`, where a newline or tab inside a string is written
 *   `\n`/`\t`: the letter ended the digit run, so `{"a":"4111\n1111\n1111\n1111"}` passed. Now any
 *   backslash in the document sends it to the per-leaf check (which reads the unescaped value); the
 *   common path (no backslash, no 12-digit run) is unchanged.
 * - `card_data_in_text(value)` also reads a text that is serialised JSON with its escapes as spaces,
 *   and, for a 17–19-digit run no run of its groups makes Luhn-valid, tests the 15- and 16-digit
 *   windows anchored at its start and end (`4111111111111111123`, PAN then CVC). Runs of 13–16 digits
 *   are not searched this way: unix-ms and migration timestamps would be refused one time in three.
 *   A 17–19-digit numeric id is refused about one time in three (four windows, each Luhn-valid one
 *   time in ten): gateway references live in the exempt columns and exempt JSON paths of
 *   20261206000100, whose reasons say so; `knex_migrations.name` holds 14-digit prefixes only.
 *
 * `down` restores both functions as 20261206000100 wrote them.
 */
import type { Knex } from 'knex';

const CARD_DATA_IN_TEXT = `create or replace function card_data_in_text(value text) returns boolean
language plpgsql immutable strict parallel safe as $$
declare
  run text;
  groups text[];
  digits text;
  whole text;
begin
  -- Serialised JSON kept as text writes a newline between groups as a backslash and a letter: read
  -- every JSON escape as the separator it stands for (the hex digits of \\uXXXX are no digits).
  if strpos(value, '\\') > 0 then
    whole := regexp_replace(value, '\\\\(u[0-9A-Fa-f]{4}|[ntrbf"\\\\/])', ' ', 'g');
    if whole <> value and card_data_in_text(whole) then return true; end if;
  end if;
  if value !~ '[0-9]([^A-Za-z0-9]*[0-9]){11}' then return false; end if;
  for run in select m[1] from regexp_matches(value, '([0-9]+([^A-Za-z0-9]+[0-9]+)*)', 'g') as m loop
    groups := regexp_split_to_array(run, '[^0-9]+');
    digits := array_to_string(groups, '');
    continue when length(digits) < 12;
    if length(digits) > 19 then return true; end if;
    whole := digits;
    for i in 1 .. array_length(groups, 1) loop
      digits := '';
      for j in i .. array_length(groups, 1) loop
        digits := digits || groups[j];
        exit when length(digits) > 19;
        if length(digits) >= 12 and card_data_luhn(digits) then return true; end if;
      end loop;
    end loop;
    -- A PAN with up to three digits glued to it: the 15- and 16-digit windows at either end.
    if length(whole) >= 17 and (card_data_luhn(left(whole, 15)) or card_data_luhn(left(whole, 16))
        or card_data_luhn(right(whole, 15)) or card_data_luhn(right(whole, 16))) then
      return true;
    end if;
  end loop;
  return false;
end $$`;

const CARD_DATA_IN_JSON = `create or replace function card_data_in_json(doc jsonb) returns boolean
language plpgsql immutable strict parallel safe as $$
declare
  item jsonb;
  body text;
begin
  if jsonb_typeof(doc) = 'number' and (doc #>> '{}') !~ '^-{0,1}[0-9]+$' then return false; end if;
  if jsonb_typeof(doc) in ('string', 'number') then return card_data_in_text(doc #>> '{}'); end if;
  if jsonb_typeof(doc) not in ('object', 'array') then return false; end if;
  body := doc::text;
  -- Pre-scan of the whole document: without 12 digits unbroken by a letter and without a backslash
  -- (every JSON escape, \\n, \\t, \\uXXXX…, puts a letter or a hex digit between digits that a leaf
  -- holds separated), no leaf can hold a card number; only the keys remain.
  if strpos(body, '\\') > 0 or body ~ '[0-9]([^A-Za-z0-9]*[0-9]){11}' then
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
end $$`;

const OLD_CARD_DATA_IN_TEXT = `create or replace function card_data_in_text(value text) returns boolean
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
end $$`;

const OLD_CARD_DATA_IN_JSON = `create or replace function card_data_in_json(doc jsonb) returns boolean
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
end $$`;

export async function up(knex: Knex): Promise<void> {
  await knex.raw(CARD_DATA_IN_TEXT);
  await knex.raw(CARD_DATA_IN_JSON);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(OLD_CARD_DATA_IN_TEXT);
  await knex.raw(OLD_CARD_DATA_IN_JSON);
}
