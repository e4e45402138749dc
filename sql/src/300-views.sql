-- Observability views. security_invoker makes each view read its tables with the
-- privileges (and row-level security) of the role that queries it.

create view durable.runs with (security_invoker = true) as
select
    r.id,
    r.workflow,
    r.status,
    r.input,
    r.result,
    r.error,
    r.attempt,
    r.queue,
    r.priority,
    r.owner,
    r.parent_id,
    r.idempotency_key,
    r.created_at,
    r.started_at,
    r.finished_at,
    r.wake_at,
    r.worker_id,
    r.finished_at - r.started_at as duration,
    (
        select pg_catalog.count(*)
        from durable._steps as s
        where s.run_id = r.id
    ) as steps,
    (
        select s.name
        from durable._steps as s
        where s.run_id = r.id and s.seq > 0
        order by s.seq desc
        limit 1
    ) as current_step
from durable._runs as r;

comment on view durable.runs is
'Workflow runs: status, input, result or error, timing, owner.';

create view durable.steps with (security_invoker = true) as
select
    s.run_id,
    s.seq,
    s.name,
    s.kind,
    s.status,
    s.attempts,
    s.output,
    s.error,
    s.started_at,
    s.finished_at,
    s.finished_at - s.started_at as duration
from durable._steps as s;

comment on view durable.steps is
'Checkpointed steps of every run, in execution order (seq), with output or error.';

create view durable.workflow_versions with (security_invoker = true) as
select
    v.id,
    v.workflow,
    v.kind,
    v.source_hash,
    v.source,
    v.owner,
    v.created_at,
    (
        select pg_catalog.count(*)
        from durable._runs as r
        where r.version_id = v.id and r.finished_at is null
    ) as unfinished_runs
from durable._workflow_versions as v;

comment on view durable.workflow_versions is
'Every distinct source (Python) or definition (SQL) a run was started with, by sha256.';
