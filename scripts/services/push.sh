#!/usr/bin/env bash
# The independent push service used by the web push tests (adapters/tests/support/push_service.py)
# needs Python 3 with `http_ece` (aes128gcm decryption) and `cryptography` (ECDH, ES256).
# Installs them with pip when missing; running it again changes nothing.
set -euo pipefail

if ! command -v python3 >/dev/null 2>&1; then
  echo "push.sh: python3 is not installed; install it first (e.g. apt-get install python3 python3-pip)" >&2
  exit 1
fi

if python3 -c 'import http_ece, cryptography' >/dev/null 2>&1; then
  echo "push.sh: http_ece and cryptography are already installed"
  exit 0
fi

. "$(dirname "$0")/pip.sh"
pip_install push.sh http_ece cryptography

python3 -c 'import http_ece, cryptography' || {
  echo "push.sh: http_ece or cryptography still cannot be imported after installing" >&2
  exit 1
}
echo "push.sh: http_ece and cryptography are installed"
