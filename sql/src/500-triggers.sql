-- Starting runs from table changes: a row-level trigger function.

create function durable.start_on_trigger() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_key text;
    v_row jsonb;
    v_input jsonb;
begin
    if tg_level <> 'ROW' or tg_when <> 'AFTER' then
        raise exception using
            errcode = 'feature_not_supported',
            message = pg_catalog.format(
                'durable.start_on_trigger() on %I.%I must be an AFTER ... FOR EACH ROW trigger',
                tg_table_schema, tg_table_name
            ),
            hint = 'CREATE TRIGGER t AFTER INSERT ON tbl FOR EACH ROW EXECUTE FUNCTION '
            'durable.start_on_trigger(''schema.workflow'');';
    end if;
    if tg_nargs < 1 or tg_nargs > 2 then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = pg_catalog.format(
                'trigger %s on %I.%I must pass the workflow name (and optionally a key column)',
                tg_name, tg_table_schema, tg_table_name
            ),
            hint = 'EXECUTE FUNCTION durable.start_on_trigger(''app.workflow'', ''id'')';
    end if;
    v_input := pg_catalog.jsonb_build_object(
        'op', tg_op,
        'schema', tg_table_schema,
        'table', tg_table_name,
        'new', case when tg_op in ('INSERT', 'UPDATE') then pg_catalog.to_jsonb(new) end,
        'old', case when tg_op in ('UPDATE', 'DELETE') then pg_catalog.to_jsonb(old) end
    );
    if tg_nargs = 2 then
        v_row := case when tg_op = 'DELETE' then v_input -> 'old' else v_input -> 'new' end;
        if not v_row ? tg_argv[1] then
            raise exception using
                errcode = 'undefined_column',
                message = pg_catalog.format(
                    'trigger %s: table %I.%I has no column %I for the idempotency key',
                    tg_name, tg_table_schema, tg_table_name, tg_argv[1]
                ),
                hint = 'The second trigger argument names a column of the table.';
        end if;
        v_key := pg_catalog.format(
            '%s.%s:%s:%s', tg_table_schema, tg_table_name, tg_argv[1], v_row ->> tg_argv[1]
        );
    end if;
    perform durable.start(tg_argv[0], v_input, idempotency_key => v_key);
    return null;
end
$body$;

comment on function durable.start_on_trigger() is
'Trigger function: starts a run of TG_ARGV[0] for each row, with input '
'{"op", "schema", "table", "new", "old"}; TG_ARGV[1] names a column used as '
'idempotency key. The run belongs to the triggering transaction.';
