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

if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "push.sh: pip is missing for python3; install it (e.g. apt-get install python3-pip)" >&2
  exit 1
fi

echo "push.sh: installing http_ece and cryptography with pip"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! python3 -m pip install --quiet http_ece cryptography 2>"$log"; then
  if grep -q externally-managed-environment "$log"; then
    # Debian marks its Python as externally managed; these two packages do not clash with it.
    echo "push.sh: the Python is externally managed; retrying with --break-system-packages"
    python3 -m pip install --quiet --break-system-packages http_ece cryptography
  else
    cat "$log" >&2
    exit 1
  fi
fi

python3 -c 'import http_ece, cryptography' || {
  echo "push.sh: http_ece or cryptography still cannot be imported after installing" >&2
  exit 1
}
echo "push.sh: http_ece and cryptography are installed"
