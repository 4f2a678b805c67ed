#!/usr/bin/env bash
# The one installer of pinned PyPI packages for the interop tests; each tests/interop/*/install.sh
# sets what to install and execs this. Usage (through a wrapper): install.sh DIR
#
# The wrapper exports:
#   NAME   its own name, for messages          PINS   the pinned requirement list
#   MARK   the marker file that proves DIR is ours (never wipes a directory it did not make)
#   WHAT   what is installed, for messages     CHECK  Python code that must run after install
#
# Afterwards run scripts with DIR/bin/python. That interpreter is a venv (python3 -m venv);
# where venv/ensurepip is missing, the packages go into DIR/site via `pip install --target`
# and DIR/bin/python is a small wrapper that puts DIR/site on PYTHONPATH.
# Idempotent: does nothing when DIR/.installed holds the same pins. Quiet on success; on
# failure prints the reason and the tail of the pip log on stderr and exits non-zero, so the
# test fails, never skips. PYTHON=... picks the interpreter (default python3).
set -euo pipefail
: "${NAME:?}" "${PINS:?}" "${MARK:?}" "${WHAT:?}" "${CHECK:?}"

die() { echo "$NAME: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: $NAME DIR"
DIR=$1
case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac
PY=${PYTHON:-python3}

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
    echo "$NAME: $*" >&2
    if [ -s "$LOG" ]; then
        echo "--- last lines of $LOG ---" >&2
        tail -n 25 "$LOG" >&2
    fi
    exit 1
}

# shellcheck disable=SC2086 # PINS is a word list on purpose
if "$PY" -m venv "$DIR" >"$LOG" 2>&1 && [ -x "$DIR/bin/python" ]; then
    "$DIR/bin/python" -m pip install -q --disable-pip-version-check --no-input $PINS >>"$LOG" 2>&1 \
        || fail "pip install of the pinned $WHAT into the venv failed (pins: $PINS)"
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
(cd / && "$DIR/bin/python" -c "$CHECK") >>"$LOG" 2>&1 \
    || fail "the installed $WHAT does not import or lacks what the test needs ($CHECK)"

printf '%s\n' "$PINS" >"$DIR/.installed"
