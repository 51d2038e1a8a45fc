#!/usr/bin/env bash
# Runs every test in the workspace against real peers.
#
#   bash tests/run.sh [--require-services] [test runner args...]
#
# Installs Samba and PostgreSQL when missing (Debian, as root), starts a
# throw-away PostgreSQL cluster on 127.0.0.1 for the run and exports its URL
# as WBH_TEST_DATABASE_URL (unless that is already set), then runs
# `cargo nextest run --workspace --locked --no-fail-fast` (or `cargo test`
# when cargo-nextest is missing) with the remaining arguments.
# The Samba AD DCs are started by the tests themselves, one per test.
#
# --require-services  exports WBH_TEST_REQUIRE_SERVICES=1: a test that cannot
#                     find a service it needs fails instead of skipping (CI).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

runner_args=()
for arg in "$@"; do
    case $arg in
    --require-services) export WBH_TEST_REQUIRE_SERVICES=1 ;;
    *) runner_args+=("$arg") ;;
    esac
done

say() { printf 'tests/run.sh: %s\n' "$*" >&2; }

# --- packages -----------------------------------------------------------------

missing=()
command -v samba-tool >/dev/null && command -v samba >/dev/null || missing+=(samba)
# Samba starts winbindd as part of an AD DC.
[ -x /usr/sbin/winbindd ] || missing+=(winbind)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v ip >/dev/null || missing+=(iproute2)
# Swagger UI is tested in a real browser.
command -v chromium >/dev/null || missing+=(chromium)

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        say "missing ${missing[*]}; install them (Debian: apt-get install ${missing[*]}) or the tests that need them skip"
    else
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # Keep package scripts from starting the system's own smbd/postgres:
        # they would hold ports our throw-away peers need.
        made_policy=0
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            made_policy=1
        fi
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
        [ "$made_policy" -eq 0 ] || rm -f /usr/sbin/policy-rc.d
    fi
fi

# --- PostgreSQL ---------------------------------------------------------------

pg_dir=
pg_bin=
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}
stop_postgres() {
    if [ -n "$pg_dir" ]; then
        as_postgres "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$pg_dir"
    fi
}
trap stop_postgres EXIT
trap 'exit 130' INT TERM

port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [ -n "${WBH_TEST_DATABASE_URL:-}" ]; then
    say "using WBH_TEST_DATABASE_URL from the environment"
elif initdb=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1) && [ -n "$initdb" ]; then
    pg_bin=$(dirname "$initdb")
    pg_dir=$(mktemp -d /tmp/wbhealth-pg.XXXXXX)
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$pg_dir"
    fi
    as_postgres "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust \
        --encoding=UTF8 --no-sync >"$pg_dir/initdb.log" 2>&1 ||
        { cat "$pg_dir/initdb.log" >&2; exit 1; }
    started=0
    for port in $(seq 55432 55531); do
        port_is_free "$port" || continue
        if as_postgres "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $pg_dir -c fsync=off -c max_connections=200" \
            start >/dev/null; then
            started=1
            break
        fi
    done
    if [ "$started" -ne 1 ]; then
        say "PostgreSQL did not start; its log ends:"
        tail -n 20 "$pg_dir/postgres.log" >&2 || true
        exit 1
    fi
    export WBH_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    say "throw-away PostgreSQL at $WBH_TEST_DATABASE_URL"
else
    say "PostgreSQL is not installed; tests that need it skip"
fi

# --- tests --------------------------------------------------------------------

# Both runners take -p/--package; --workspace only when no package is named.
scope=(--workspace)
for arg in "${runner_args[@]}"; do
    case $arg in -p | --package | --package=* | -p?*) scope=() ;; esac
done

status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run "${scope[@]}" --locked --no-fail-fast "${runner_args[@]}" || status=$?
else
    say "cargo-nextest is missing; running cargo test"
    cargo test "${scope[@]}" --locked --no-fail-fast "${runner_args[@]}" || status=$?
fi
exit "$status"
