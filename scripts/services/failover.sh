#!/usr/bin/env bash
# A PostgreSQL primary with a synchronous hot standby, managed by pg_auto_failover (Debian's
# postgresql-15-auto-failover): a monitor on 127.0.0.1:5440 and two nodes on 5441 and 5442,
# trust authentication, database `test`, under $OSHIRASE_FAILOVER_DIR (default
# /var/tmp/oshirase-failover). tests/failover.rs kills whichever node is the primary and
# checks that the service carries on on the other. Installs the packages when missing,
# creates the formation once, starts whatever is not running, restarts a node a test
# killed (it rejoins as the standby), and waits until there is a primary and a secondary.
# Running it again changes nothing.
set -euo pipefail

dir="${OSHIRASE_FAILOVER_DIR:-/var/tmp/oshirase-failover}"
pgctl="$(ls -d /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)"
monitor_uri="postgres://autoctl_node@127.0.0.1:5440/pg_auto_failover?sslmode=disable"

if ! command -v pg_autoctl >/dev/null 2>&1; then
  echo "failover.sh: installing pg_auto_failover" >&2
  version="$(basename "$(dirname "$(dirname "$pgctl")")")"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    "postgresql-$version-auto-failover" pg-auto-failover-cli >/dev/null
fi

as_postgres() {
  # pg_autoctl refuses to run as root.
  runuser -u postgres -- "$@"
}

mkdir -p "$dir"
chown postgres:postgres "$dir"

running() {
  pgrep -f "pg_autoctl run --pgdata $1\$" >/dev/null 2>&1
}

# Each node runs in a process group of its own, written to PGDATA.pgid: its pg_autoctl, the
# supervisors it starts and its postgres all go when a test kills the group, and nothing is
# left behind to start postgres again.
start() {
  local pgdata="$1"
  if ! running "$pgdata"; then
    # What a killed node left (a postgres kept by a supervisor of an earlier group) goes first.
    if [ -f "$pgdata.pgid" ]; then
      kill -KILL -- "-$(cat "$pgdata.pgid")" 2>/dev/null || true
    fi
    pkill -KILL -f -- "-D $pgdata( |\$)" 2>/dev/null || true
    sleep 0.5
    # Their pid files may name zombies (a container's init may not reap them), which look
    # alive to pg_autoctl and postgres: nothing of this node runs now, so they go.
    rm -f "$pgdata/postmaster.pid" "/tmp/pg_autoctl$pgdata/pg_autoctl.pid"
    as_postgres setsid bash -c "echo \$\$ > $pgdata.pgid; exec pg_autoctl run --pgdata $pgdata >> $pgdata.log 2>&1" < /dev/null > /dev/null 2>&1 &
    for _ in $(seq 1 50); do
      [ -s "$pgdata.pgid" ] && break
      sleep 0.1
    done
  fi
}

if [ ! -d "$dir/monitor" ]; then
  as_postgres pg_autoctl create monitor --pgdata "$dir/monitor" --pgport 5440 \
    --hostname 127.0.0.1 --auth trust --no-ssl --pgctl "$pgctl" >> "$dir/create.log" 2>&1
fi
start "$dir/monitor"
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5440 && break
  sleep 1
done

for n in 1 2; do
  if [ ! -d "$dir/node$n" ]; then
    as_postgres pg_autoctl create postgres --pgdata "$dir/node$n" --pgport "544$n" \
      --hostname 127.0.0.1 --auth trust --no-ssl --monitor "$monitor_uri" --pgctl "$pgctl" \
      --dbname test --name "node$n" >> "$dir/create.log" 2>&1
  fi
  start "$dir/node$n"
  # The second node is made from the first one's base backup: wait until the first is up.
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p "544$n" && break
    sleep 1
  done
done

state() {
  as_postgres pg_autoctl show state --pgdata "$dir/monitor" 2>/dev/null || true
}

for _ in $(seq 1 120); do
  s="$(state)"
  if grep -Eq '\|\s+primary\s+\|\s+primary\s*$' <<<"$s" && grep -Eq '\|\s+secondary\s+\|\s+secondary\s*$' <<<"$s"; then
    echo "failover.sh: a primary and a secondary on 127.0.0.1:5441,5442 (monitor 5440)"
    exit 0
  fi
  sleep 1
done
echo "failover.sh: the formation has no primary and secondary after 2 minutes:" >&2
state >&2
echo "logs: $dir/*.log" >&2
exit 1
