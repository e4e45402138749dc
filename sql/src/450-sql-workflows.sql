-- SQL-declared workflows: definitions as data (docs/sql-workflows.md), run by the same
-- engine as Python workflows, pinned the same way (each distinct definition is a row of
-- durable._workflow_versions), and diagrams of definitions and runs.

create table durable._sql_workflows (
    name text not null,
    owner name not null default durable._caller(),
    version_id bigint not null,
    created_at timestamptz not null default pg_catalog.now(),
    updated_at timestamptz not null default pg_catalog.now(),
    constraint sql_workflows_pkey primary key (name),
    constraint sql_workflows_version_fkey foreign key (version_id)
    references durable._workflow_versions (id)
);

comment on table durable._sql_workflows is
'SQL-declared workflows by name, with the version new runs start with.';

select pg_catalog.pg_extension_config_dump('durable._sql_workflows', '');

create function durable._check_definition(p_workflow text, p_definition jsonb) returns jsonb
language plpython3u
set search_path = pg_catalog, pg_temp
as $body$
engine = GD[plpy.execute("select durable._load() as key")[0]["key"]]
return engine.workflows.check_definition_json(plpy, p_workflow, p_definition)
$body$;

comment on function durable._check_definition(text, jsonb) is
'Validates a workflow definition: {"definition": canonical form} or {"error": {...}}.';

create function durable._sql_workflow_name(p_name text, p_schema text) returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_parts text [];
begin
    begin
        v_parts := pg_catalog.parse_ident(p_name);
    exception when invalid_parameter_value then
        v_parts := null;
    end;
    if v_parts is null or pg_catalog.cardinality(v_parts) not in (1, 2) then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = pg_catalog.format('invalid workflow name "%s"', p_name),
            hint = 'Name a workflow schema.name, like a function.';
    end if;
    if pg_catalog.cardinality(v_parts) = 1 then
        v_parts := array[p_schema, v_parts[1]];
    end if;
    if v_parts[1] is null or pg_catalog.to_regnamespace(pg_catalog.quote_ident(v_parts[1])) is null then
        raise exception using
            errcode = 'invalid_schema_name',
            message = pg_catalog.format('schema "%s" of workflow "%s" does not exist', v_parts[1], p_name),
            hint = 'Create the schema first, or qualify the name with an existing schema.';
    end if;
    return pg_catalog.format('%I.%I', v_parts[1], v_parts[2]);
end
$body$;

comment on function durable._sql_workflow_name(text, text) is
'The qualified name (schema.name) a SQL workflow is defined under; resolves search_path.';

create function durable._find_sql_workflow(p_name text, p_schemas name [])
returns durable._sql_workflows
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_parts text [];
    v_row durable._sql_workflows;
    v_schema text;
begin
    begin
        v_parts := pg_catalog.parse_ident(p_name);
    exception when invalid_parameter_value then
        return null;
    end;
    if pg_catalog.cardinality(v_parts) = 2 then
        select w.* into v_row
        from durable._sql_workflows as w
        where w.name = pg_catalog.format('%I.%I', v_parts[1], v_parts[2]);
        return v_row;
    end if;
    if pg_catalog.cardinality(v_parts) <> 1 then
        return null;
    end if;
    foreach v_schema in array p_schemas::text [] loop
        select w.* into v_row
        from durable._sql_workflows as w
        where w.name = pg_catalog.format('%I.%I', v_schema, v_parts[1]);
        if found then
            return v_row;
        end if;
    end loop;
    return null;
end
$body$;

comment on function durable._find_sql_workflow(text, name []) is
'The SQL workflow a name refers to (qualified, or through search_path), or null.';

create function durable._define_workflow(
    name text,
    definition jsonb,
    retry jsonb,
    timeout interval,
    p_schema text
) returns text
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $body$
#variable_conflict use_column
declare
    v_name text;
    v_schema text;
    v_caller name := durable._caller();
    v_owner name;
    v_checked jsonb;
    v_source text;
    v_hash text;
    v_version bigint;
begin
    if _define_workflow.name is null or _define_workflow.definition is null then
        raise exception using
            errcode = 'null_value_not_allowed',
            message = 'define_workflow needs a name and a definition',
            hint = 'durable.define_workflow(''app.job'', ''{"steps": [...]}'')';
    end if;
    v_name := durable._sql_workflow_name(_define_workflow.name, p_schema);
    v_schema := (pg_catalog.parse_ident(v_name))[1];
    -- Names are per schema, like functions: defining one needs CREATE on its schema.
    -- Checked before anything else, so that the error does not tell whether the name
    -- is taken.
    if not pg_catalog.has_schema_privilege(
        v_caller, pg_catalog.to_regnamespace(pg_catalog.quote_ident(v_schema))::oid, 'CREATE'
    ) then
        raise exception using
            errcode = 'insufficient_privilege',
            message = pg_catalog.format(
                'permission denied to define workflow "%s": role "%s" lacks CREATE on schema %s',
                v_name, v_caller, pg_catalog.quote_ident(v_schema)
            ),
            hint = pg_catalog.format(
                'Defining or replacing a SQL workflow requires CREATE on its schema, like '
                'creating a function there: ask the schema''s owner for GRANT CREATE ON '
                'SCHEMA %s, or define it in a schema of your own.',
                pg_catalog.quote_ident(v_schema)
            );
    end if;
    if pg_catalog.to_regproc(v_name) is not null then
        raise exception using
            errcode = 'duplicate_function',
            message = pg_catalog.format(
                'workflow "%s" is already a function; SQL workflows share its namespace',
                v_name
            ),
            hint = 'Choose another name, or drop the function.';
    end if;
    -- A definition belongs to the role that first defined it; only that role or a
    -- durable_admin member may replace it (an admin's version keeps the owner).
    select w.owner into v_owner
    from durable._sql_workflows as w
    where w.name = v_name
    for update;
    if not found then
        v_owner := v_caller;
    elsif v_owner <> v_caller and not durable._caller_is_admin() then
        raise exception using
            errcode = 'insufficient_privilege',
            message = pg_catalog.format(
                'permission denied to replace workflow "%s": another role defined it', v_name
            ),
            hint = 'Only the role that defined a SQL workflow, or a member of durable_admin, '
            'may replace it; choose another name.';
    end if;
    perform durable._check_payload(
        _define_workflow.definition, pg_catalog.format('definition of workflow %s', v_name)
    );
    v_checked := durable._check_definition(v_name, _define_workflow.definition);
    if v_checked ? 'error' then
        perform durable._raise(v_checked -> 'error');
    end if;
    v_source := (v_checked -> 'definition')::text;
    v_hash := pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(v_source, 'UTF8')), 'hex');
    insert into durable._workflow_versions (workflow, kind, source_hash, source, owner)
    values (v_name, 'sql', v_hash, v_source, v_owner)
    on conflict on constraint workflow_versions_workflow_hash_key do nothing
    returning id into v_version;
    if v_version is null then
        select wv.id into v_version
        from durable._workflow_versions as wv
        where wv.owner = v_owner and wv.workflow = v_name and wv.source_hash = v_hash;
    end if;
    insert into durable._sql_workflows as w (name, owner, version_id)
    values (v_name, v_owner, v_version)
    on conflict on constraint sql_workflows_pkey do update
        set version_id = excluded.version_id, updated_at = pg_catalog.now()
        where w.owner = excluded.owner;
    if not found then
        -- Another role defined the name between our check and this insert.
        raise exception using
            errcode = 'insufficient_privilege',
            message = pg_catalog.format(
                'permission denied to replace workflow "%s": another role defined it', v_name
            ),
            hint = 'Only the role that defined a SQL workflow, or a member of durable_admin, '
            'may replace it; choose another name.';
    end if;
    perform durable._register_workflow(
        v_name, _define_workflow.retry, null, _define_workflow.timeout, '{}'
    );
    return v_name;
end
$body$;

comment on function durable._define_workflow(text, jsonb, jsonb, interval, text) is
'The body of durable.define_workflow, with the caller''s current schema (security '
'definer: checks CREATE on the workflow''s schema and who owns an existing definition).';

create function durable.define_workflow(
    name text,
    definition jsonb,
    retry jsonb default null,
    timeout interval default null
) returns text
language sql
as $body$
    select durable._define_workflow(
        name, definition, retry, timeout, pg_catalog.current_schema()
    );
$body$;

comment on function durable.define_workflow(text, jsonb, jsonb, interval) is
'Defines (or redefines: a new version for new runs) a workflow whose definition is data; '
'validated now, nothing written on error.';

create function durable.graph(workflow text) returns text
language plpython3u
as $body$
engine = GD[plpy.execute("select durable._load() as key")[0]["key"]]
return engine.rendering.graph_json(plpy, workflow)
$body$;

comment on function durable.graph(text) is
'A Mermaid flowchart of a SQL workflow''s current definition.';

create function durable.explain(run uuid) returns text
language plpython3u
set search_path = pg_catalog, pg_temp
as $body$
engine = GD[plpy.execute("select durable._load() as key")[0]["key"]]
return engine.rendering.explain_json(plpy, run)
$body$;

comment on function durable.explain(uuid) is
'A Mermaid flowchart of the steps a run took, with status, attempts and durations.';

-- Builders: SQL functions that produce the canonical JSON of a definition, so that a
-- definition reads naturally in SQL. The JSON form stays the reference (docs).

create function durable.seq(variadic steps jsonb []) returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $body$
    select pg_catalog.jsonb_build_object('steps', pg_catalog.to_jsonb(steps));
$body$;

comment on function durable.seq(jsonb []) is
'A workflow definition {"steps": [...]} from steps made by the *_step builders.';

create function durable.steps(variadic steps jsonb []) returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $body$
    select pg_catalog.to_jsonb(steps);
$body$;

comment on function durable.steps(jsonb []) is
'A list of steps, for the branches of parallel_step/race_step and the bodies of '
'if_step/repeat_step.';

create function durable.sql_step(
    name text,
    sql text,
    params jsonb default null,
    retry jsonb default null,
    timeout interval default null
) returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $body$
    select pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'name', name, 'sql', sql, 'params', params, 'retry', retry,
        'timeout', timeout::text
    ));
$body$;

comment on function durable.sql_step(text, text, jsonb, jsonb, interval) is
'A SQL step: {"name", "sql", "params", "retry", "timeout"}.';

create function durable.sleep_step(duration interval) returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $body$
    select pg_catalog.jsonb_build_object('sleep', duration::text);
$body$;

comment on function durable.sleep_step(interval) is 'A durable timer step: {"sleep": duration}.';

create function durable.signal_step(
    name text,
    signal text default null,
    timeout interval default null
) returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $body$
    select pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'name', name, 'wait_for_signal', coalesce(signal, name), 'timeout', timeout::text
    ));
$body$;

comment on function durable.signal_step(text, text, interval) is
'A step that waits for a signal (named like the step unless signal is given).';

create function durable.child_step(name text, workflow text, input jsonb default '{}')
returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $body$
    select pg_catalog.jsonb_build_object('name', name, 'workflow', workflow, 'input', input);
$body$;

comment on function durable.child_step(text, text, jsonb) is
'A child workflow step: {"name", "workflow", "input"} (input strings may be paths).';

create function durable.if_step(
    condition text,
    then_steps jsonb,
    else_steps jsonb default '[]',
    params jsonb default null,
    name text default null
) returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $body$
    select pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'if', condition, 'params', params, 'then', then_steps, 'else', else_steps,
        'name', name
    ));
$body$;

comment on function durable.if_step(text, jsonb, jsonb, jsonb, text) is
'A conditional step: runs then_steps when the SQL condition is true, else else_steps.';

create function durable.repeat_step(
    body jsonb,
    until text,
    max_iterations integer,
    params jsonb default null,
    name text default null
) returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $body$
    select pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'repeat', body, 'until', until, 'params', params,
        'max_iterations', max_iterations, 'name', name
    ));
$body$;

comment on function durable.repeat_step(jsonb, text, integer, jsonb, text) is
'A loop: runs body, then stops when the SQL condition until is true (at most '
'max_iterations times).';

create function durable.parallel_step(variadic branches jsonb []) returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $body$
    select pg_catalog.jsonb_build_object('parallel', pg_catalog.to_jsonb(branches));
$body$;

comment on function durable.parallel_step(jsonb []) is
'Runs each branch (a list of steps, see durable.steps) as a child run; waits for all.';

create function durable.race_step(variadic branches jsonb []) returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $body$
    select pg_catalog.jsonb_build_object('race', pg_catalog.to_jsonb(branches));
$body$;

comment on function durable.race_step(jsonb []) is
'Runs each branch as a child run; the first to finish wins, the others are cancelled.';
