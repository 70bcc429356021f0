#!/usr/bin/env bash
# Installs the mail servers the e-mail tests and benchmark start themselves: MailDev (an SMTP
# server with an HTTP API to read messages back) from npm into target/services, and Postfix's
# smtp-sink (a fast SMTP sink that can reject or disconnect on purpose) from Debian's postfix
# package. Idempotent: what is there already is left alone. Nothing is started here, and no
# Postfix daemon is left running.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { echo "mail.sh: $*"; }

# --- MailDev -------------------------------------------------------------------------------
maildev=target/services/node_modules/.bin/maildev
if [ -x "$maildev" ]; then
  say "MailDev present ($maildev)"
else
  if ! command -v npm >/dev/null 2>&1; then
    say "npm is needed to install MailDev (install Node.js first)" >&2
    exit 1
  fi
  say "installing MailDev 3 from npm into target/services"
  mkdir -p target/services
  npm install --prefix target/services --no-audit --no-fund --loglevel=error maildev@3
  if [ ! -x "$maildev" ]; then
    say "npm finished but $maildev is missing" >&2
    exit 1
  fi
fi

# --- smtp-sink -----------------------------------------------------------------------------
sink=/usr/sbin/smtp-sink
if [ -x "$sink" ]; then
  say "smtp-sink present ($sink)"
else
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "smtp-sink is missing: install Debian's postfix package (as root: apt-get install postfix)" >&2
    exit 1
  fi
  say "installing Debian's postfix package for smtp-sink (no mail system is configured)"
  # "No configuration": Postfix is installed but not set up as this machine's mailer.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # Keep the package scripts from starting the daemon (only if no policy is in place).
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    own_policy=1
  fi
  cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
  trap cleanup EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix >/dev/null
  cleanup
  trap - EXIT
  if [ ! -x "$sink" ]; then
    say "the postfix package did not bring $sink" >&2
    exit 1
  fi
fi

# The tests need no MTA: stop a Postfix master if the package (or anything else) started one.
if [ -x /usr/sbin/postfix ] && /usr/sbin/postfix status >/dev/null 2>&1; then
  say "stopping the Postfix daemon (the tests do not use it)"
  /usr/sbin/postfix stop >/dev/null 2>&1 || true
fi

say "ready: $maildev, $sink"
