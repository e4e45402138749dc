-- durable: durable workflow execution inside PostgreSQL.
--
-- Architecture, in one screen
-- ---------------------------
-- A workflow is a PL/Python function `f(input jsonb) returns jsonb` whose body calls the
-- workflow context `wf` (wf.step, wf.sleep, ...). A run is one execution of a workflow:
-- a row in durable._runs, created by durable.start() in the caller's own transaction, so
-- a rolled-back start never existed.
--
-- The function is never called through SQL. When a run starts, durable.start() pins the
-- function's source text (by sha256) in durable._workflow_versions; workers compile that
-- pinned copy into a Python function in their own frame, exactly as PL/Python does, so
-- that CREATE OR REPLACE only affects new runs.
--
-- Workers are the procedure durable.run_worker(), called on an autocommit connection
-- (pg_cron or `durablectl worker`). A worker registers in durable._workers with its
-- backend's pid and start time (alive while that backend exists), and loops: claim the
-- best ready run (FOR UPDATE SKIP LOCKED over a partial index that holds only unfinished
-- runs), execute it, poll with a short back-off when idle. A step's SQL (or Python
-- callable) and its checkpoint row in durable._steps commit in one transaction, at the
-- workflow's next durable call or with the run's end (only run_worker's CALL commits:
-- its loop, and the workflow context while it executes a run), so a crash loses no
-- committed step and repeats none. A failing step is rolled back, recorded as failed
-- and raised into the workflow code as durable.StepFailed.
--
-- While a worker holds a run it does not replay: the function keeps running in the
-- worker's frame between steps. When a run is resumed, its checkpoints are loaded with
-- one query and the function is executed again from the top; checkpointed steps return
-- their recorded values without running.
--
-- The engine is the Python package plpython/durable/, embedded in this script by
-- tools/build_sql.py and loaded into sys.modules by durable._load(), cached in GD under
-- a key that carries the extension version.
--
-- Security: no role but the extension's owner can write durable's tables. Functions
-- that write are SECURITY DEFINER and check who asks: the API acts for
-- durable._caller(), the worker's functions (durable._worker_*, _claim, _save_step, ...)
-- for the session user, whose runs alone the worker executes. Source is written to
-- durable._workflow_versions only from pg_proc or a validated definition.
--
-- Errors raised by durable carry SQLSTATEs of the project class DU (see docs/errors.md)
-- or a standard SQLSTATE where one fits (22023, 42883, 42809, 42501).

-- The schema is fixed (not @extschema@): everything lives in `durable`, created here so
-- that it is a member of the extension and DROP EXTENSION removes it.
create schema durable;

do $do$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'durable_admin') then
        create role durable_admin nologin;
    end if;
end
$do$;

comment on schema durable is 'durable workflow execution: API functions and views';

-- Who calls. Functions that write durable's tables are SECURITY DEFINER (no other role
-- holds INSERT, UPDATE or DELETE on them), so inside them current_user is the
-- extension's owner. The caller is the role the session acts as: the role of SET ROLE,
-- or else the session user. Neither can be set to a role the session user is not a
-- member of, and a SECURITY DEFINER function does not change them.
-- Both have no SET clause, so that the planner inlines them into the queries that call
-- them (they are called in every write); they name only pg_catalog objects, qualified.
create function durable._caller() returns name
language sql stable parallel safe
as $body$
    select case
        when pg_catalog.current_setting('role') operator (pg_catalog.=) 'none' then session_user
        else pg_catalog.current_setting('role')::pg_catalog.name
    end;
$body$;

comment on function durable._caller() is
'The role on whose behalf durable is called: the SET ROLE role, or else session_user.';

create function durable._caller_is_admin() returns boolean
language sql stable parallel safe
as $body$
    select pg_catalog.pg_has_role(durable._caller(), 'durable_admin', 'member');
$body$;

comment on function durable._caller_is_admin() is
'True when the calling role is a member of durable_admin (sees and steers all runs).';
