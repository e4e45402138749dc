# durable: PGXS build of the extension, plus the developer targets.
# The version lives in durable.control (default_version) and nowhere else.

EXTENSION = durable
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*--*.sql))
EXTRA_CLEAN = $(DATA_built)

PG_CONFIG ?= pg_config
# PGXS sets PYTHON to the interpreter PostgreSQL was built with; the tools use PY.
PY ?= python3
PGXS := $(wildcard $(shell $(PG_CONFIG) --pgxs 2>/dev/null))
ifneq ($(PGXS),)
include $(PGXS)
else
all install:
	@echo "PGXS not found: run 'make bootstrap' (installs postgresql-server-dev-15)"; exit 1
endif

ENGINE_SOURCES = $(shell find plpython/durable -name '*.py' | sort)

# target: sql/durable--<version>.sql - the install script (SQL sources + embedded engine)
$(DATA_built): $(EXTENSION).control tools/build_sql.py $(sort $(wildcard sql/src/*.sql)) $(ENGINE_SOURCES)
	$(PY) tools/build_sql.py --out $@

.PHONY: bootstrap demo test lint format client

# target: bootstrap - install the PostgreSQL packages and Python tools that are missing
bootstrap:
	tools/bootstrap.sh

# target: demo - bootstrap, install, run the example workflow in a throwaway cluster
demo: bootstrap
	$(MAKE) install
	$(PY) tools/demo.py

# target: test - bootstrap, install, run the whole test suite against throwaway clusters
test: bootstrap
	$(MAKE) install
	$(PY) -m pytest

# target: client - pip install the durablectl command line client
client:
	$(PY) -m pip install ./client

# target: lint - sqlfluff on the SQL sources, ruff on all Python
lint:
	$(PY) -m sqlfluff lint sql/src
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# target: format - apply ruff format and the sqlfluff fixes
format:
	$(PY) -m ruff format .
	$(PY) -m sqlfluff fix sql/src
