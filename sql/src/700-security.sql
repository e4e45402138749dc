-- Security: row-level security on every table, and what a role needs to use durable.
--
-- A run belongs to the role that started it (owner). Every table carries its owner, and
-- a role sees only its own rows, unless it is a member of durable_admin. No role but the
-- extension's owner may write the tables: every write goes through a SECURITY DEFINER
-- function of durable that checks who asks (see 000-schema.sql). Workers execute only
-- runs owned by their session user, so steps run with the privileges of the role that
-- started the run (pg_cron's model: one pool per role). Nothing is granted to PUBLIC:
-- durable.grant_usage(role) grants what a role needs.

create function durable._is_admin() returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $body$
    select pg_catalog.pg_has_role(current_user, 'durable_admin', 'member');
$body$;

comment on function durable._is_admin() is
'True when the current role is a member of durable_admin (sees and steers all runs).';

alter table durable._runs enable row level security;
create policy runs_owner on durable._runs for select
using (owner = current_user or (select durable._is_admin()));

alter table durable._steps enable row level security;
create policy steps_owner on durable._steps for select
using (owner = current_user or (select durable._is_admin()));

alter table durable._step_attempts enable row level security;
create policy step_attempts_owner on durable._step_attempts for select
using (owner = current_user or (select durable._is_admin()));

alter table durable._signals enable row level security;
create policy signals_owner on durable._signals for select
using (owner = current_user or (select durable._is_admin()));

alter table durable._workflow_versions enable row level security;
create policy workflow_versions_owner on durable._workflow_versions for select
using (owner = current_user or (select durable._is_admin()));

alter table durable._workflow_options enable row level security;
create policy workflow_options_owner on durable._workflow_options for select
using (owner = current_user or (select durable._is_admin()));

alter table durable._sql_workflows enable row level security;
create policy sql_workflows_owner on durable._sql_workflows for select
using (owner = current_user or (select durable._is_admin()));

alter table durable._schedules enable row level security;
create policy schedules_owner on durable._schedules for select
using (owner = current_user or (select durable._is_admin()));

alter table durable._schedule_fires enable row level security;
create policy schedule_fires_owner on durable._schedule_fires for select
using (owner = current_user or (select durable._is_admin()));

alter table durable._workers enable row level security;
create policy workers_role on durable._workers for select
using (role = current_user or (select durable._is_admin()));

alter table durable._settings enable row level security;
create policy settings_read on durable._settings for select using (true);

create function durable.grant_usage(role name) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $body$
begin
    if not exists (select from pg_catalog.pg_roles as r where r.rolname = grant_usage.role) then
        raise exception using
            errcode = 'undefined_object',
            message = pg_catalog.format('role "%s" does not exist', grant_usage.role),
            hint = 'Create the role first: CREATE ROLE ... LOGIN.';
    end if;
    -- Reading only: every write goes through durable's functions, which check who asks.
    execute pg_catalog.format('grant usage on schema durable to %I', role);
    execute pg_catalog.format('grant select on all tables in schema durable to %I', role);
    execute pg_catalog.format('grant execute on all routines in schema durable to %I', role);
end
$body$;

comment on function durable.grant_usage(name) is
'Grants a role what it needs to start, watch and steer its own runs and to run workers '
'for them: EXECUTE on durable''s functions and SELECT on its tables and views (row-level '
'security limits it to its own rows); no write privilege on any table.';

create function durable.revoke_usage(role name) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $body$
begin
    if not exists (select from pg_catalog.pg_roles as r where r.rolname = revoke_usage.role) then
        raise exception using
            errcode = 'undefined_object',
            message = pg_catalog.format('role "%s" does not exist', revoke_usage.role),
            hint = 'Check the role name in pg_roles.';
    end if;
    execute pg_catalog.format('revoke all on all routines in schema durable from %I', role);
    execute pg_catalog.format('revoke all on all sequences in schema durable from %I', role);
    execute pg_catalog.format('revoke all on all tables in schema durable from %I', role);
    execute pg_catalog.format('revoke all on schema durable from %I', role);
end
$body$;

comment on function durable.revoke_usage(name) is
'Revokes what durable.grant_usage() granted; the role''s runs stay.';

revoke all on all routines in schema durable from public;
select durable.grant_usage('durable_admin');
