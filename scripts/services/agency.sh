#!/usr/bin/env bash
# The agency tests check what we sign with independent Python libraries: `standardwebhooks`
# (the reference package, webhook `v1` HMAC signatures), `cryptography` (Ed25519 `v1a`),
# `authlib` and `jwcrypto` (JOSE: signed pulls and tokens), `requests` (their HTTP client).
# adapters/tests/verify_webhook.py is one of them. Installs the packages with pip when one is
# missing; running it again changes nothing.
set -euo pipefail

# Each package imports under its own name.
packages=(standardwebhooks authlib jwcrypto requests cryptography)

importable() {
  local IFS=,
  python3 -c "import ${packages[*]}" >/dev/null 2>&1
}

if ! command -v python3 >/dev/null 2>&1; then
  echo "agency.sh: python3 is not installed; install it first (e.g. apt-get install python3 python3-pip)" >&2
  exit 1
fi

if importable; then
  echo "agency.sh: ${packages[*]} are already installed"
  exit 0
fi

. "$(dirname "$0")/pip.sh"
pip_install agency.sh "${packages[@]}"

importable || {
  echo "agency.sh: ${packages[*]} were installed but one still cannot be imported" >&2
  exit 1
}
echo "agency.sh: ${packages[*]} are installed"
