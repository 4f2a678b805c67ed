#!/usr/bin/env bash
# Install what the approval-page browser test needs: Debian's Chromium and its WebDriver
# (apt, only when missing; through sudo only when not root), and Selenium 4.x pinned with its
# dependencies into DIR (PyPI, through ../pip-install.sh). Usage: install.sh DIR
# Run the driver (approval.py beside this file) with DIR/bin/python. Prints the paths of the
# browser and the driver on stdout as two lines, `chromium=PATH` and `chromedriver=PATH`,
# so that the test never lets Selenium Manager fetch a browser or a driver of its own.
set -euo pipefail
NAME=tests/interop/browser/install.sh
die() { echo "$NAME: $*" >&2; exit 1; }
[ $# -eq 1 ] && [ -n "$1" ] || die "usage: $NAME DIR"

find_browser() {
    for b in chromium chromium-browser; do
        command -v "$b" 2>/dev/null && return 0
    done
    return 1
}
find_driver() {
    for d in chromedriver /usr/bin/chromedriver /usr/lib/chromium/chromedriver; do
        if command -v "$d" >/dev/null 2>&1; then command -v "$d"; return 0; fi
    done
    return 1
}

# Serialise concurrent apt installs (two tests starting at once).
lock=${TMPDIR:-/tmp}/cada-browser-apt.lock
if command -v flock >/dev/null 2>&1; then
    exec 8>"$lock" || die "cannot open lock file $lock"
    flock 8 || die "cannot lock $lock"
fi
if ! find_browser >/dev/null || ! find_driver >/dev/null; then
    as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "chromium/chromium-driver missing, not root and no sudo: apt-get install chromium chromium-driver"
        as_root=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    log=${TMPDIR:-/tmp}/cada-browser-apt.log
    { "${as_root[@]}" apt-get update -qq \
        && "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver; } \
        >"$log" 2>&1 || { tail -n 25 "$log" >&2; die "apt-get install chromium chromium-driver failed (log: $log)"; }
fi
browser=$(find_browser) || die "chromium not found after apt-get install"
driver=$(find_driver) || die "chromedriver not found after apt-get install chromium-driver"
exec 8>&-

NAME=$NAME \
PINS="selenium==4.38.0 certifi==2026.10.19.post1 trio==0.35.0 trio-websocket==0.12.2 typing_extensions==4.16.0 websocket-client==1.9.2 attrs==26.1.0 outcome==1.3.0.post0 PySocks==1.7.1 sniffio==1.3.1 wsproto==1.3.2 idna==3.21 sortedcontainers==2.4.0 urllib3==2.8.0 h11==0.16.0" \
MARK=.cada-browser-interop \
WHAT="selenium" \
CHECK='from selenium.webdriver.common.virtual_authenticator import VirtualAuthenticatorOptions; import selenium; assert selenium.__version__.startswith("4.")' \
    bash "$(dirname -- "$0")/../pip-install.sh" "$1" >&2
echo "chromium=$browser"
echo "chromedriver=$driver"
