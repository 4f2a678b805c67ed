#!/usr/bin/env bash
# Install python-cwt (PyPI `cwt`, the COSE library whose COSE-HPKE follows
# draft-ietf-cose-hpke-23 in this version), pinned with its dependencies, into DIR for the
# sealing interop test (cose_hpke.py beside this file). Usage: tests/interop/cose/install.sh DIR
# Run it with DIR/bin/python. How it installs: ../pip-install.sh.
set -euo pipefail
export NAME=tests/interop/cose/install.sh
export PINS="cwt==3.3.0 pyhpke==0.6.5 cbor2==5.9.0 cryptography==51.0.1 cffi==2.1.1 pycparser==3.12"
export MARK=.cada-cose-interop
export WHAT="python-cwt"
export CHECK='import cwt, cbor2; from cwt import COSEAlgs; assert COSEAlgs.HPKE_4 == 42'
exec bash "$(dirname -- "$0")/../pip-install.sh" "$@"
