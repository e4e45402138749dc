#!/usr/bin/env bash
# Installs what `make demo` and `make test` need and is missing: the Debian packages of
# PostgreSQL 15 (server, PL/Python, server headers, pg_cron) and the pinned Python tools
# of requirements-dev.txt. Safe to run again: it installs nothing that is already there.
#
# tools/bootstrap.sh 17 (make test PG=17) also fetches the pinned PostgreSQL 17 build
# into its cache unless it is there (tools/pgbinaries.py); the 15 packages stay, since
# they bring the libraries that build's server and PL/Python load.
set -euo pipefail
cd "$(dirname "$0")/.."
major=${1:-}

packages=(postgresql-15 postgresql-plpython3-15 postgresql-server-dev-15 postgresql-15-cron)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if ((${#missing[@]})); then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "bootstrap: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
fi

PY=${PY:-python3}
if ! "$PY" tools/requirements_met.py requirements-dev.txt; then
    echo "bootstrap: installing Python tools from requirements-dev.txt"
    "$PY" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
fi

if [ -n "$major" ] && [ "$major" != 15 ]; then
    "$PY" tools/pgbinaries.py fetch "$major" >/dev/null
fi
