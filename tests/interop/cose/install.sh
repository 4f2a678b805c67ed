#!/usr/bin/env bash
# Install python-cwt (PyPI `cwt`, the COSE library whose COSE-HPKE follows
# draft-ietf-cose-hpke-23 in this version), pinned with its dependencies, into DIR for the
# sealing interop test (cose_hpke.py beside this file).
#
#   tests/interop/cose/install.sh DIR
#
# Afterwards run the script with DIR/bin/python (a venv; where venv is unusable, the
# packages go into DIR/site and DIR/bin/python is a wrapper that puts it on PYTHONPATH).
# Idempotent (DIR/.installed holds the pins). Quiet on success; on failure prints the reason
# and the tail of the pip log on stderr and exits non-zero: the test then fails, never skips.
set -euo pipefail

PINS="cwt==3.3.0 pyhpke==0.6.5 cbor2==5.9.0 cryptography==51.0.1 cffi==2.1.1 pycparser==3.12"

die() { echo "install.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: $0 DIR"
DIR=$1
case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac
PY=${PYTHON:-python3}
MARK=.cada-cose-interop

mkdir -p "$(dirname -- "$DIR")" || die "cannot create the parent of $DIR"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$DIR.lock" || die "cannot open lock file $DIR.lock"
    flock 9 || die "cannot lock $DIR.lock"
fi

if [ -f "$DIR/.installed" ] && [ "$(cat "$DIR/.installed")" = "$PINS" ] && [ -x "$DIR/bin/python" ]; then
    exit 0
fi

command -v "$PY" >/dev/null 2>&1 || die "$PY not found (set PYTHON=...)"
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
        || fail "pip install of the pinned python-cwt into the venv failed (pins: $PINS)"
else
    rm -rf -- "$DIR/bin" "$DIR/lib" "$DIR/lib64" "$DIR/include" "$DIR/pyvenv.cfg"
    mkdir -p "$DIR/bin" || die "cannot create $DIR/bin"
    echo "python3 -m venv unusable; falling back to pip install --target" >>"$LOG"
    "$PY" -m pip --version >>"$LOG" 2>&1 || fail "neither venv nor pip works for $PY"
    "$PY" -m pip install -q --disable-pip-version-check --no-input --target "$DIR/site" $PINS >>"$LOG" 2>&1 \
        || fail "pip install --target $DIR/site failed (pins: $PINS)"
    pyabs=$(command -v "$PY")
    cat >"$DIR/bin/python" <<EOS
#!/bin/sh
PYTHONPATH="$DIR/site\${PYTHONPATH:+:\$PYTHONPATH}" exec "$pyabs" "\$@"
EOS
    chmod +x "$DIR/bin/python"
fi

(cd / && "$DIR/bin/python" -c 'import cwt, cbor2; from cwt import COSEAlgs; assert COSEAlgs.HPKE_4 == 42') >>"$LOG" 2>&1 \
    || fail "the installed python-cwt does not import or has no HPKE-4 (42)"

printf '%s\n' "$PINS" >"$DIR/.installed"
