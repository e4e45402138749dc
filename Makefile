# durable: PGXS build of the extension, plus the developer targets.
# The version lives in durable.control (default_version) and nowhere else.

EXTENSION = durable
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)
# The version in development is built into build/: its install script, and an update
# script from each older version that has a change file sql/updates/<old>--<new>.sql.
# Released versions' scripts are frozen, tracked copies in sql/ that nothing rebuilds
# (docs/releasing.md).
EXT_SCRIPT = build/$(EXTENSION)--$(EXTVERSION).sql
EXT_UPDATES = $(patsubst sql/updates/%.sql,build/$(EXTENSION)--%.sql,\
	$(wildcard sql/updates/*--$(EXTVERSION).sql))
DATA_built = $(EXT_SCRIPT) $(EXT_UPDATES)
DATA = $(wildcard sql/$(EXTENSION)--*.sql)
EXTRA_CLEAN = build

# PGXS sets PYTHON to the interpreter PostgreSQL was built with; the tools use PY.
PY ?= python3
# PG=16, 17 or 18 selects that PostgreSQL major: the pinned build that
# tools/pgbinaries.py caches (`make bootstrap PG=N` fetches it); PG=15 is Debian's, and
# so is the default. The tests, the demo and the bench run the server of PG_CONFIG.
ifneq ($(PG),)
PG_CONFIG := $(shell $(PY) tools/pgbinaries.py pg-config $(PG))
ifeq ($(PG_CONFIG),)
$(error PG=$(PG): not a supported PostgreSQL major (tools/pgbinaries.py list))
endif
endif
PG_CONFIG ?= pg_config
export PG_CONFIG
PGXS := $(wildcard $(shell $(PG_CONFIG) --pgxs 2>/dev/null))
ifneq ($(PGXS),)
include $(PGXS)
else
all install:
	@echo "PGXS not found: run 'make bootstrap$(if $(PG), PG=$(PG))' (installs"\
		"postgresql-server-dev-15$(if $(filter-out 15,$(PG)), and fetches PostgreSQL $(PG)))"; exit 1
endif

ENGINE_SOURCES = $(shell find plpython/durable -name '*.py' | sort)

# Every script of the version in development is built from all of these: an update
# script repeats the routines and views of sql/src (its idempotent part).
BUILD_INPUTS = $(EXTENSION).control tools/build_sql.py $(ENGINE_SOURCES) \
	$(sort $(wildcard sql/src/*.sql))

# target: build/durable--<version>.sql - the install script (SQL sources + engine)
$(EXT_SCRIPT): $(BUILD_INPUTS)
	$(PY) tools/build_sql.py --out $@

# target: build/durable--<old>--<version>.sql - an update script: the hand-written
# incremental part, the routines and views of sql/src, the engine, the trailing part
$(EXT_UPDATES): build/$(EXTENSION)--%--$(EXTVERSION).sql: \
		sql/updates/%--$(EXTVERSION).sql $(wildcard sql/updates/*.post.sql) \
		$(BUILD_INPUTS)
	$(PY) tools/build_sql.py --update-from $* --out $@

.PHONY: bootstrap demo test chaos bench bench-quick lint format client

# target: bootstrap - install the PostgreSQL packages and Python tools that are missing
# (with PG=N, fetch that major's pinned build too); PG=N works with every target below
bootstrap:
	tools/bootstrap.sh $(PG)

# target: demo - bootstrap, install, run the example workflow in a throwaway cluster
demo: bootstrap
	$(MAKE) install
	$(PY) tools/demo.py

# target: test - bootstrap, install, run the whole test suite against throwaway clusters
test: bootstrap
	$(MAKE) install
	$(PY) -m pytest

# target: chaos - the fault tests with their long variants (2000 runs and 50 kill -9,
# three failovers, 60 s of load), printing their figures, after make test's set-up
chaos: bootstrap
	$(MAKE) install
	DURABLE_CHAOS=1 $(PY) -m pytest -s tests/test_chaos.py tests/test_crash.py \
		tests/test_failover.py tests/test_load.py

# target: bench - the full benchmark (about 15 minutes): durable beside a plain floor and DBOS
bench: bootstrap
	$(MAKE) install
	$(PY) bench/run.py

# target: bench-quick - the same figures on smaller sizes (under 2 minutes)
bench-quick: bootstrap
	$(MAKE) install
	$(PY) bench/run.py --quick

# target: client - pip install the durablectl command line client
client:
	$(PY) -m pip install ./client

# The public wrappers that resolve a workflow name through the caller's search_path have
# no SET clause on purpose (they hold only schema-qualified calls), run_worker is a
# procedure that commits, which a SET clause would forbid, and _caller/_caller_is_admin
# are inlined into the queries that call them, which a SET clause would prevent.
PGSPOT_FLAGS = --ignore-lang plpython3u \
	--proc-without-search-path 'durable.start(workflow text,input jsonb,start_at timestamptz,idempotency_key text,queue text,priority integer)' \
	--proc-without-search-path 'durable.register_workflow(workflow text,retry jsonb,max_attempts integer,timeout interval)' \
	--proc-without-search-path 'durable.run_worker(queue text,max_runtime interval,drain boolean)' \
	--proc-without-search-path 'durable._caller()' \
	--proc-without-search-path 'durable._caller_is_admin()' \
	--proc-without-search-path 'durable.schedule(name text,cron text,workflow text,input jsonb,timezone text,overlap text,catch_up text,enabled boolean)' \
	--proc-without-search-path 'durable.define_workflow(name text,definition jsonb,retry jsonb,timeout interval)'

# Update scripts replace their own functions and views: CREATE OR REPLACE (pgspot PS002,
# PS015) cannot take over another owner's object there, since PostgreSQL refuses to
# replace an object that is not a member of the extension being updated.
# target: lint - sqlfluff on the SQL sources, ruff on all Python, pgspot on the scripts
lint: $(DATA_built)
	$(PY) -m sqlfluff lint sql/src sql/updates
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	pgspot $(PGSPOT_FLAGS) $(EXT_SCRIPT)
	$(if $(EXT_UPDATES),pgspot $(PGSPOT_FLAGS) --ignore PS002 --ignore PS015 $(EXT_UPDATES))

# target: format - apply ruff format and the sqlfluff fixes
format:
	$(PY) -m ruff format .
	$(PY) -m sqlfluff fix sql/src sql/updates
