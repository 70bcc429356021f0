# Sourced by the scripts here that install Python packages: `pip_install NAME SPEC...`
# installs with pip, retrying with --break-system-packages when Debian marks its Python as
# externally managed (pip then installs under /usr/local and removes nothing of Debian's;
# newer copies of shared modules may shadow Debian's, which a test machine accepts).
# NAME prefixes the messages.
pip_install() {
  local name="$1"
  shift
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "$name: pip is missing for python3; install it (e.g. apt-get install python3-pip)" >&2
    return 1
  fi
  echo "$name: installing $* with pip"
  local log
  log="$(mktemp)"
  if ! python3 -m pip install --quiet "$@" 2>"$log"; then
    if grep -q externally-managed-environment "$log"; then
      echo "$name: the Python is externally managed; retrying with --break-system-packages"
      python3 -m pip install --quiet --break-system-packages "$@" || { rm -f "$log"; return 1; }
    else
      cat "$log" >&2
      rm -f "$log"
      return 1
    fi
  fi
  rm -f "$log"
}
