#!/usr/bin/env bash
# thaw's one test command: README and CI (.ci/run) call exactly this.
#
# On a fresh Debian 12 machine it installs what the tests need, makes sure
# MariaDB answers on 127.0.0.1:3306, builds thaw, runs the Rust tests and then
# the Python suites (fidelity, real tools, legacy) through the debug binary.
# Any failure exits non-zero; nothing is silently skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DB_HOST=127.0.0.1
DB_PORT=3306
export DEBIAN_FRONTEND=noninteractive

phase() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install system packages"
    SUDO="sudo -n"
fi

# ---------------------------------------------------------------- apt packages
phase "system packages"
# package -> a file or command that proves it is installed
need_pkgs=()
dpkg -s libmariadb-dev >/dev/null 2>&1 || need_pkgs+=(libmariadb-dev)
command -v pkg-config >/dev/null 2>&1 || need_pkgs+=(pkg-config)
{ command -v mysql >/dev/null 2>&1 && command -v mysqldump >/dev/null 2>&1 && command -v mariadb-admin >/dev/null 2>&1; } || need_pkgs+=(mariadb-client)
command -v sysbench >/dev/null 2>&1 || need_pkgs+=(sysbench)
# a C compiler and Python headers are needed to build mysqlclient's wheel
command -v cc >/dev/null 2>&1 || need_pkgs+=(build-essential)
[ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "installing: ${need_pkgs[*]}"
    $SUDO apt-get update -q || die "apt-get update failed"
    $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" \
        || die "apt-get install ${need_pkgs[*]} failed"
else
    echo "all present (libmariadb-dev, pkg-config, mariadb-client, sysbench)"
fi

# ---------------------------------------------------------------- virtualenv
phase "python virtualenv (.venv)"
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || die "$PY not found"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
    rm -rf .venv
    "$PY" -m venv .venv || die "cannot create .venv with $PY"
fi
REQ=tests/python/requirements.txt
STAMP=.venv/.thaw-requirements.sha256
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -r "$REQ" \
        || die "pip install -r $REQ failed"
    echo "$want" > "$STAMP"
else
    echo "requirements already installed"
fi
.venv/bin/python - <<'EOF' || die "python test dependencies do not import"
import pymysql, aiomysql, MySQLdb, mysql.connector, sqlalchemy, pytest, cryptography
print("pymysql", pymysql.VERSION_STRING, "| aiomysql", aiomysql.__version__,
      "| mysqlclient", ".".join(map(str, MySQLdb.version_info[:3])),
      "| mysql-connector", mysql.connector.__version__,
      "| SQLAlchemy", sqlalchemy.__version__, "| pytest", pytest.__version__)
EOF

# ---------------------------------------------------------------- Node
# tests/node (mysql2, mariadb, sequelize) is run by tests/python/prepared/test_node.py.
phase "node test dependencies (tests/node)"
command -v node >/dev/null 2>&1 || die "node not found: the Node driver tests need Node >= 20 and npm"
command -v npm >/dev/null 2>&1 || die "npm not found: the Node driver tests need npm (npm ci in tests/node)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "node $(node --version) is too old: the Node driver tests need >= 20"
NLOCK=tests/node/package-lock.json
NSTAMP=tests/node/node_modules/.thaw-lock.sha256
want="$(sha256sum "$NLOCK" | cut -d' ' -f1)"
if [ "$(cat "$NSTAMP" 2>/dev/null || true)" != "$want" ]; then
    (cd tests/node && npm ci --no-audit --no-fund) || die "npm ci in tests/node failed"
    echo "$want" > "$NSTAMP"
else
    echo "tests/node/node_modules matches $NLOCK"
fi
echo "node $(node --version), npm $(npm --version)"

# ---------------------------------------------------------------- MariaDB
phase "MariaDB on $DB_HOST:$DB_PORT"
ping_db() { mariadb-admin --protocol=TCP -h"$DB_HOST" -P"$DB_PORT" -uroot --connect-timeout=2 ping >/dev/null 2>&1; }
if ! ping_db; then
    echo "not answering; starting /usr/sbin/mariadbd"
    # the Debian package's runtime dir may be missing on a fresh machine
    $SUDO install -d -o mysql -g mysql /run/mysqld 2>/dev/null || true
    $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd \
        || die "start-stop-daemon could not start mariadbd"
    for i in $(seq 1 60); do
        ping_db && break
        sleep 1
    done
    ping_db || die "MariaDB did not answer on $DB_HOST:$DB_PORT within 60 s"
fi
sqlq() { mysql --protocol=TCP -h"$DB_HOST" -P"$DB_PORT" -uroot -N -B -e "$1"; }
echo "server: $(sqlq 'SELECT VERSION()')"
sqlq 'CREATE DATABASE IF NOT EXISTS test' || die "cannot create database test"
if [ "$(sqlq 'SELECT @@GLOBAL.local_infile')" != "1" ]; then
    echo "enabling local_infile"
    sqlq 'SET GLOBAL local_infile = 1' || die "cannot enable local_infile"
fi
echo "local_infile=$(sqlq 'SELECT @@GLOBAL.local_infile')"

# ---------------------------------------------------------------- Rust
phase "cargo fmt --check, cargo clippy --all-targets -D warnings"
cargo fmt --check || die "cargo fmt --check: run cargo fmt"
cargo clippy --all-targets --locked -- -D warnings || die "clippy found warnings"

phase "cargo build --locked"
cargo build --locked || die "cargo build failed"

phase "cargo test --locked"
cargo test --locked || die "cargo test failed"

# ---------------------------------------------------------------- Python
export THAW_BIN="$ROOT/target/debug/thaw"
[ -x "$THAW_BIN" ] || die "$THAW_BIN missing after cargo build"
phase "pytest tests/python (THAW_BIN=$THAW_BIN)"
set +e
# -rs: every skip prints its reason (only cases a driver cannot run, such as
# PyMySQL with the compressed protocol, are skipped; a missing database fails).
.venv/bin/python -m pytest tests/python -q -rs "$@"
rc=$?
set -e
case $rc in
    0) ;;
    5) die "pytest collected no tests" ;;
    *) die "pytest failed (exit $rc)" ;;
esac

# The safety suite once more with defer_writes: true on every rule: held-back
# writes must keep every guarantee (tests/python/safety/deferral.py).
phase "pytest tests/python/safety with defer_writes (THAW_SAFETY_DEFER=1)"
set +e
THAW_SAFETY_DEFER=1 .venv/bin/python -m pytest tests/python/safety -q "$@"
rc=$?
set -e
case $rc in
    0) ;;
    5) die "pytest (safety, defer_writes) collected no tests" ;;
    *) die "pytest (safety, defer_writes) failed (exit $rc)" ;;
esac

# ---------------------------------------------------------------- deployment
phase "deployment artefacts (scripts/lint-deploy.sh)"
bash scripts/lint-deploy.sh || die "lint-deploy failed"

phase "all tests passed"
