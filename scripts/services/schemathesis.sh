#!/usr/bin/env bash
# The portal's OpenAPI test (portal/tests/schemathesis.rs) runs the schemathesis CLI from PyPI
# against /openapi.json. Installs schemathesis 4.x (4.32 or later) with pip when missing or
# outside that range (its command-line flags changed between major versions); running it
# again changes nothing.
set -euo pipefail

spec='schemathesis>=4.32,<5'

if ! command -v python3 >/dev/null 2>&1; then
  echo "schemathesis.sh: python3 is not installed; install it first (e.g. apt-get install python3 python3-pip)" >&2
  exit 1
fi

# The test runs `python3 -m schemathesis.cli`, so that is what has to work, in the pinned range.
installed() {
  python3 -c '
import importlib.metadata, sys
import schemathesis.cli
major, minor = (int(p) for p in importlib.metadata.version("schemathesis").split(".")[:2])
sys.exit(0 if major == 4 and minor >= 32 else 1)
' >/dev/null 2>&1
}

version() {
  python3 -c 'import importlib.metadata as m; print(m.version("schemathesis"))'
}

if installed; then
  echo "schemathesis.sh: schemathesis $(version) is already installed"
  exit 0
fi

. "$(dirname "$0")/pip.sh"
pip_install schemathesis.sh "$spec"

installed || {
  echo "schemathesis.sh: schemathesis 4.x (4.32 or later) still cannot be imported after installing" >&2
  exit 1
}
echo "schemathesis.sh: schemathesis $(version) is installed"
