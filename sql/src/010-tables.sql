-- Tables: workflow versions, runs, steps, workers, settings.
--
-- Tables start with an underscore and are internal; the views in 300-views.sql are the
-- public way to read them. No foreign keys from steps to runs: the step insert is the hot
-- path and durable.purge() deletes both together.

create table durable._workflow_versions (
    id bigint generated always as identity,
    workflow text not null,
    kind text not null,
    source_hash text not null,
    source text not null,
    argname text,
    owner name not null default durable._caller(),
    created_at timestamptz not null default pg_catalog.now(),
    constraint workflow_versions_pkey primary key (id),
    constraint workflow_versions_workflow_hash_key unique (owner, workflow, source_hash),
    constraint workflow_versions_kind_check check (kind in ('python', 'sql'))
);

comment on table durable._workflow_versions is
'Every distinct source of every workflow that a run was started with; runs are pinned to one.';

create table durable._runs (
    id uuid not null default pg_catalog.gen_random_uuid(),
    workflow text not null,
    version_id bigint not null,
    status text not null default 'pending',
    input jsonb not null default '{}',
    result jsonb,
    error jsonb,
    attempt integer not null default 1,
    queue text not null default 'default',
    priority integer not null default 0,
    owner name not null default durable._caller(),
    parent_id uuid,
    idempotency_key text,
    worker_id integer,
    original_version_id bigint,
    cancel_requested boolean not null default false,
    interruptions integer not null default 0,
    waiting_for text,
    created_at timestamptz not null default pg_catalog.now(),
    started_at timestamptz,
    finished_at timestamptz,
    wake_at timestamptz,
    constraint runs_pkey primary key (id),
    constraint runs_version_fkey foreign key (version_id)
    references durable._workflow_versions (id),
    constraint runs_status_check check (
        status in (
            'pending', 'running', 'sleeping', 'waiting', 'succeeded', 'failed', 'cancelled'
        )
    ),
    constraint runs_queue_check check (queue <> '')
);

comment on table durable._runs is 'One row per workflow run; read it through durable.runs.';

-- The claim probes this index only: it holds unfinished runs, ordered the way workers
-- take them. Finished runs (the bulk of the table) are not in it.
create index runs_ready_idx on durable._runs (owner, queue, priority desc, wake_at)
where status in ('pending', 'sleeping', 'waiting');

create index runs_ready_any_queue_idx on durable._runs (owner, priority desc, wake_at)
where status in ('pending', 'sleeping', 'waiting');

create unique index runs_idempotency_key_idx on durable._runs (
    owner, workflow, idempotency_key
) where idempotency_key is not null;

create index runs_finished_at_idx on durable._runs (finished_at)
where finished_at is not null;

create index runs_parent_idx on durable._runs (parent_id)
where parent_id is not null;

create index runs_running_idx on durable._runs (worker_id)
where status = 'running';

-- Until VACUUM, every run executed leaves dead entries at the front of the ready
-- indexes that the next claims step over. Vacuum _runs after a fixed number of dead
-- rows, not after a fraction of the table (the default 20%), so that the cost of a
-- claim does not grow with the number of finished runs kept.
alter table durable._runs set (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000
);

create table durable._steps (
    run_id uuid not null,
    seq integer not null,
    name text not null,
    kind text not null,
    status text not null,
    attempts integer not null default 1,
    output jsonb,
    error jsonb,
    started_at timestamptz not null,
    finished_at timestamptz,
    owner name not null default durable._caller(),
    constraint steps_pkey primary key (run_id, seq),
    constraint steps_status_check check (
        status in ('succeeded', 'failed', 'retrying', 'waiting')
    ),
    constraint steps_kind_check check (
        kind in (
            'sql', 'python', 'sleep', 'signal', 'start_children', 'wait_children',
            'value', 'compensation', 'compensate'
        )
    )
);

comment on table durable._steps is
'Checkpoints: one row per step position of a run; read it through durable.steps. '
'Rows with a negative seq are compensations that ran.';

create table durable._step_attempts (
    run_id uuid not null,
    seq integer not null,
    run_attempt integer not null,
    attempt integer not null,
    name text not null,
    error jsonb not null,
    started_at timestamptz not null,
    finished_at timestamptz not null,
    owner name not null default durable._caller(),
    constraint step_attempts_pkey primary key (run_id, seq, run_attempt, attempt)
);

comment on table durable._step_attempts is
'Every failed attempt of every step, with its error.';

create table durable._signals (
    id bigint generated always as identity,
    run_id uuid not null,
    name text not null,
    payload jsonb,
    created_at timestamptz not null default pg_catalog.now(),
    consumed_seq integer,
    owner name not null default durable._caller(),
    constraint signals_pkey primary key (id)
);

create index signals_unconsumed_idx on durable._signals (run_id, name, id)
where consumed_seq is null;

comment on table durable._signals is
'Signals sent to runs; consumed_seq is the step that received it (exactly once).';

create table durable._workflow_options (
    workflow text not null,
    owner name not null default durable._caller(),
    retry jsonb,
    max_attempts integer,
    timeout interval,
    constraint workflow_options_pkey primary key (owner, workflow),
    constraint workflow_options_max_attempts_check check (max_attempts >= 1),
    constraint workflow_options_timeout_check check (timeout > interval '0')
);

comment on table durable._workflow_options is
'Per-workflow defaults set by durable.register_workflow().';

create table durable._workers (
    id integer generated always as identity,
    pid integer not null,
    backend_start timestamptz not null,
    role name not null,
    queue text,
    started_at timestamptz not null default pg_catalog.now(),
    heartbeat_at timestamptz not null default pg_catalog.now(),
    run_id uuid,
    step_deadline timestamptz,
    constraint workers_pkey primary key (id)
);

comment on table durable._workers is
'Workers, written only by durable._worker_register(): a worker is alive while a backend '
'with its pid and backend_start exists (nothing another role can forge).';

create table durable._settings (
    key text not null,
    value text not null,
    description text not null,
    constraint settings_pkey primary key (key)
);

comment on table durable._settings is 'Engine settings; read with durable.setting(key).';

insert into durable._settings (key, value, description) values
(
    'worker.poll_interval', '0.025',
    'seconds an idle worker waits at most between two looks for ready runs'
),
(
    'worker.statement_timeout_margin', '2',
    'seconds a worker keeps between its max_runtime and the session statement_timeout'
),
(
    'worker.housekeeping_interval', '1',
    'seconds between two housekeeping passes of a worker (reclaim, step timeouts)'
),
(
    'step.terminate_after', '5',
    'seconds past a step timeout after which the backend is terminated, not cancelled'
),
('retry.max_attempts', '3', 'default attempts of a step'),
('retry.initial_interval', '1', 'default seconds before the second attempt'),
('retry.backoff', '2', 'default factor between two consecutive retry intervals'),
('retry.max_interval', '300', 'default longest seconds between two attempts'),
('retry.jitter', '0.1', 'default random spread of retry intervals (fraction)'),
(
    'limits.max_payload_bytes', '1048576',
    'largest input, result, step output or signal payload, in bytes of JSON'
),
(
    'limits.max_payload_depth', '100',
    'deepest nesting of arrays and objects in an input, signal payload or definition'
),
('limits.max_steps_per_run', '10000', 'most durable calls (steps, timers, ...) of one run'),
('limits.max_children', '1000', 'most child runs one run may start');

select pg_catalog.pg_extension_config_dump('durable._runs', '');
select pg_catalog.pg_extension_config_dump('durable._steps', '');
select pg_catalog.pg_extension_config_dump('durable._workflow_versions', '');
select pg_catalog.pg_extension_config_dump('durable._step_attempts', '');
select pg_catalog.pg_extension_config_dump('durable._signals', '');
-- pg_dump keeps the rows of these tables; their identity sequences must follow, or a
-- restored database would hand out ids that already exist.
select pg_catalog.pg_extension_config_dump('durable._signals_id_seq', '');
select pg_catalog.pg_extension_config_dump('durable._workflow_versions_id_seq', '');
select pg_catalog.pg_extension_config_dump('durable._workflow_options', '');
