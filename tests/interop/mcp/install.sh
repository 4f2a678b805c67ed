#!/usr/bin/env bash
# Install the official MCP Python SDK (PyPI `mcp`), pinned, into DIR for the
# end-to-end interop test (server.py / client.py beside this file).
#
#   tests/interop/mcp/install.sh DIR
#
# Afterwards run the scripts with DIR/bin/python. That interpreter is a venv
# (python3 -m venv); where venv/ensurepip is missing, the packages go into
# DIR/site via `pip install --target` and DIR/bin/python is a small wrapper
# that puts DIR/site on PYTHONPATH.
#
# Idempotent: does nothing when DIR/.installed holds the same pin string.
# Quiet on success; on failure prints the reason (and the tail of the pip log)
# on stderr and exits non-zero. PYTHON=... picks the interpreter (default python3).
#
# Note: mcp 2.x depends on `httpx2` (the httpx fork), not `httpx`; httpx is not
# used by the SDK at this version, so httpx2 is what is pinned.
set -euo pipefail

PINS="mcp==2.3.0 mcp-types==2.3.0 uvicorn==0.54.0 httpx2==2.16.2 httpcore2==2.16.2 starlette==1.10.0 anyio==4.16.0 sse-starlette==3.7.0"

die() { echo "install.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: $0 DIR"
DIR=$1
case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac
PY=${PYTHON:-python3}
MARK=.cada-mcp-interop

# Serialise concurrent installs into the same DIR (tests may run in parallel).
mkdir -p "$(dirname -- "$DIR")" || die "cannot create the parent of $DIR"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$DIR.lock" || die "cannot open lock file $DIR.lock"
    flock 9 || die "cannot lock $DIR.lock"
fi

if [ -f "$DIR/.installed" ] && [ "$(cat "$DIR/.installed")" = "$PINS" ] && [ -x "$DIR/bin/python" ]; then
    exit 0
fi

command -v "$PY" >/dev/null 2>&1 || die "$PY not found (set PYTHON=...)"

# Never wipe a directory this script did not create.
if [ -e "$DIR" ]; then
    if [ -n "$(ls -A -- "$DIR" 2>/dev/null)" ] && [ ! -f "$DIR/$MARK" ]; then
        die "$DIR exists, is not empty and was not made by this script; refusing to touch it"
    fi
    rm -rf -- "$DIR"
fi
mkdir -p "$DIR" || die "cannot create $DIR"
: >"$DIR/$MARK"
LOG=$DIR/install.log

fail() {
    echo "install.sh: $*" >&2
    if [ -s "$LOG" ]; then
        echo "--- last lines of $LOG ---" >&2
        tail -n 25 "$LOG" >&2
    fi
    exit 1
}

# shellcheck disable=SC2086 # PINS is a word list on purpose
if "$PY" -m venv "$DIR" >"$LOG" 2>&1 && [ -x "$DIR/bin/python" ]; then
    "$DIR/bin/python" -m pip install -q --disable-pip-version-check --no-input $PINS >>"$LOG" 2>&1 \
        || fail "pip install of the pinned MCP SDK into the venv failed (pins: $PINS)"
else
    # Typically Debian without python3-venv: "ensurepip is not available".
    rm -rf -- "$DIR/bin" "$DIR/lib" "$DIR/lib64" "$DIR/include" "$DIR/pyvenv.cfg"
    mkdir -p "$DIR/bin" || die "cannot create $DIR/bin"
    echo "python3 -m venv unusable (see above); falling back to pip install --target" >>"$LOG"
    "$PY" -m pip --version >>"$LOG" 2>&1 || fail "neither venv nor pip works for $PY"
    "$PY" -m pip install -q --disable-pip-version-check --no-input --target "$DIR/site" $PINS >>"$LOG" 2>&1 \
        || fail "pip install --target $DIR/site failed (pins: $PINS)"
    pyabs=$(command -v "$PY")
    cat >"$DIR/bin/python" <<EOF
#!/bin/sh
PYTHONPATH="$DIR/site\${PYTHONPATH:+:\$PYTHONPATH}" exec "$pyabs" "\$@"
EOF
    chmod +x "$DIR/bin/python"
fi

# The scripts import these; check before declaring success.
(cd / && "$DIR/bin/python" -c 'import mcp, mcp.client.streamable_http, mcp.server.mcpserver, uvicorn, httpx2') >>"$LOG" 2>&1 \
    || fail "the installed SDK does not import"

printf '%s\n' "$PINS" >"$DIR/.installed"
