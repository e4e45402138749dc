-- Trailing part of the update from 0.2.0 to 0.3.0: what needs the routines of 0.3.0,
-- which the idempotent part before it has created.

-- A row belongs to the role durable is called for, also inside the SECURITY DEFINER
-- functions that write it.
alter table durable._workflow_versions alter column owner set default durable._caller();
alter table durable._runs alter column owner set default durable._caller();
alter table durable._steps alter column owner set default durable._caller();
alter table durable._step_attempts alter column owner set default durable._caller();
alter table durable._signals alter column owner set default durable._caller();
alter table durable._workflow_options alter column owner set default durable._caller();
alter table durable._schedules alter column owner set default durable._caller();
alter table durable._schedule_fires alter column owner set default durable._caller();
alter table durable._sql_workflows alter column owner set default durable._caller();

-- Privileges. Routines are created executable by PUBLIC: no routine of durable is.
revoke all on all routines in schema durable from public;

-- No role but the owner writes durable's tables or uses its sequences any more: every
-- write goes through a SECURITY DEFINER function. Every privilege on a table or view
-- but SELECT (0.2.0's grant_usage gave INSERT, UPDATE and DELETE too) and every
-- privilege on a sequence is revoked from every role but the owner. Then each role
-- that 0.2.0's durable.grant_usage() was given to (USAGE on the schema and EXECUTE on
-- durable.run_worker) gets what 0.3.0's grants, as in a fresh install.
do $do$
declare
    v_grant record;
begin
    for v_grant in
        select
            c.oid::regclass as relation,
            c.relkind = 'S' as is_sequence,
            case a.grantee when 0 then 'public' else pg_catalog.quote_ident(r.rolname) end
                as grantee,
            pg_catalog.string_agg(a.privilege_type, ', ' order by a.privilege_type)
                as privileges
        from pg_catalog.pg_class as c
        cross join lateral pg_catalog.aclexplode(c.relacl) as a
        left join pg_catalog.pg_roles as r on a.grantee = r.oid
        where
            c.relnamespace = 'durable'::regnamespace
            and c.relkind in ('r', 'v', 'm', 'S')
            and a.grantee <> c.relowner
            and (c.relkind = 'S' or a.privilege_type <> 'SELECT')
        group by 1, 2, 3
    loop
        execute pg_catalog.format(
            'revoke %s on %s %s from %s cascade',
            v_grant.privileges,
            case when v_grant.is_sequence then 'sequence' else 'table' end,
            v_grant.relation,
            v_grant.grantee
        );
    end loop;
    for v_grant in
        select r.rolname
        from pg_catalog.pg_namespace as n
        cross join lateral pg_catalog.aclexplode(n.nspacl) as a
        inner join pg_catalog.pg_roles as r on a.grantee = r.oid
        where
            n.nspname = 'durable'
            and a.privilege_type = 'USAGE'
            and a.grantee <> n.nspowner
            and exists (
                select
                from pg_catalog.pg_proc as p
                cross join lateral pg_catalog.aclexplode(p.proacl) as x
                where
                    p.oid = 'durable.run_worker(text, interval, boolean)'::regprocedure
                    and x.grantee = a.grantee
                    and x.privilege_type = 'EXECUTE'
            )
        order by r.rolname
    loop
        perform durable.grant_usage(v_grant.rolname);
    end loop;
end
$do$;
