#!/usr/bin/env bash
# The test services: a throwaway PostgreSQL server and a one-node Slurm (with its own munged),
# all under one folder, for `.ci/run` and the integration tests (tests/common/services.rs).
#
#   scripts/services.sh up DIR     start them (a no-op when the ones recorded under DIR answer);
#                                  writes and prints DIR/env
#   scripts/services.sh down DIR   cancel every job, stop the daemons by their recorded pids
#
# See scripts/README.md#servicessh for the layout and the knobs.
set -euo pipefail

PROG=services.sh
# Deadlines in seconds (polled, never slept through).
LOCK_WAIT_S=${SERVICES_LOCK_WAIT_S:-600}
START_WAIT_S=${SERVICES_START_WAIT_S:-60}
STOP_WAIT_S=${SERVICES_STOP_WAIT_S:-60}

die() {
  echo "$PROG: $*" >&2
  exit 1
}

usage() {
  echo "usage: $0 up|down DIR" >&2
  exit 2
}

[[ $# -eq 2 ]] || usage
ACTION=$1
case $ACTION in up | down) ;; *) usage ;; esac
case $2 in *[[:space:]\'\"\\]*) die "DIR must not contain spaces, quotes or backslashes: $2" ;; esac

if [[ $ACTION == down && ! -d $2 ]]; then
  exit 0
fi
mkdir -p "$2"
DIR=$(cd "$2" && pwd -P)

if [[ $(id -u) -eq 0 ]]; then
  PG_USER=postgres
  MUNGE_USER=munge
else
  PG_USER=$(id -un)
  MUNGE_USER=$PG_USER
fi
ME=$(id -un)
# The prefixes that run a command as those users.
AS_PG=() AS_MUNGE=()
[[ $PG_USER == "$ME" ]] || AS_PG=(runuser -u "$PG_USER" --)
[[ $MUNGE_USER == "$ME" ]] || AS_MUNGE=(runuser -u "$MUNGE_USER" --)

# Runs CMD… in a session of its own (a Ctrl-C to the tests does not reach the daemons) with
# every descriptor above 2 closed (none keeps a caller's pipe or DIR/lock open). The callers
# point 0-2 at /dev/null and log files, so that `up` returns as soon as the daemons answer.
detached() {
  python3 -c '
import os, sys
try:
    os.setsid()
except OSError:
    pass  # already a session leader
os.closerange(3, 65536)
os.execvp(sys.argv[1], sys.argv[1:])
' "$@"
}

# Polls `CMD…` every 0.1 s until it succeeds or LIMIT seconds have passed.
wait_for() {
  local limit=$1
  shift
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.1
  done
}

# Whether PID is a live process whose command name is NAME (a recorded pid may have been reused).
# A zombie is not live: a stopped daemon, reparented to a subreaper, may wait a while for it.
pid_is() {
  local name=$1 pid=${2:-} stat
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $stat == "$pid ($name) "* && ${stat##*) } != Z* ]]
}

# The first line of FILE (a pid file), or nothing.
pid_of() {
  if [[ -r $1 ]]; then
    head -n 1 "$1" 2>/dev/null | tr -d '[:space:]' || true
  fi
}

pg_bindir() {
  # initdb's own folder (PATH may hold only links to some of the tools, as /usr/local/bin does
  # on some machines), else the newest of Debian's.
  local d
  if command -v initdb >/dev/null 2>&1; then
    d=$(dirname "$(readlink -f "$(command -v initdb)")")
    if [[ -x $d/pg_ctl && -x $d/pg_isready ]]; then
      echo "$d"
      return
    fi
  fi
  d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  [[ -n $d && -x $d/initdb && -x $d/pg_isready ]] || die "PostgreSQL not found (no initdb on PATH or in /usr/lib/postgresql/*/bin): install Debian's postgresql, or set FILTERMON_SKIP_CLUSTER=1 for the tests"
  echo "$d"
}

# COUNT distinct TCP ports, free on every address, outside the ephemeral range.
free_ports() {
  python3 - "$1" <<'EOF'
import random, socket, sys

want, out = int(sys.argv[1]), []
while len(out) < want:
    port = random.randint(20000, 32000)
    if port in out:
        continue
    free = True
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 here
        try:
            s.bind((addr, port))
        except OSError:
            free = False
        finally:
            s.close()
    if free:
        out.append(port)
print(*out)
EOF
}

# ---- layout ------------------------------------------------------------------------------------
# DIR/lock, DIR/env, DIR/state, DIR/slurm/ (slurm.conf, state/, logs, pid files).
# RUN holds what other users (postgres, munge) must enter and the Unix sockets: RUN/pg/
# (data/, the socket, postgres.log), RUN/munge/, RUN/slurm-spool/. RUN is DIR when they can
# enter DIR and its path is short enough for sockets, else /tmp/filtermon-services-HASH.
SLURM_DIR=$DIR/slurm
STATE=$DIR/state
ENV_FILE=$DIR/env

load_state() {
  RUN='' PG_PORT='' PG_BIN='' CTLD_PORT='' SLURMD_PORT='' NODE=''
  [[ -r $STATE ]] || return 1
  # shellcheck disable=SC1090
  source "$STATE"
  [[ -n $RUN ]]
}

slurm() {
  SLURM_CONF=$SLURM_DIR/slurm.conf timeout 20 "$@"
}

# ---- liveness ----------------------------------------------------------------------------------
node_state() {
  slurm sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1
}

node_is() {
  local want=$1 state
  state=$(node_state) || return 1
  [[ $state =~ ^($want)$ ]]
}

alive() {
  load_state || return 1
  [[ -r $ENV_FILE ]] || return 1
  pid_is postgres "$(pid_of "$RUN/pg/data/postmaster.pid")" || return 1
  pid_is munged "$(pid_of "$RUN/munge/munged.pid")" || return 1
  pid_is slurmctld "$(pid_of "$SLURM_DIR/slurmctld.pid")" || return 1
  pid_is slurmd "$(pid_of "$SLURM_DIR/slurmd.pid")" || return 1
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 5 || return 1
  slurm scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
  # Jobs of a test that is running may keep the node busy: that is alive too.
  node_is 'idle|mixed|allocated|completing' || return 1
}

# ---- stopping ----------------------------------------------------------------------------------
not() {
  ! "$@"
}

# Sends SIG to PID when it is NAME, waits for it to exit, then SIGKILL after the deadline.
stop_pid() {
  local name=$1 pid=$2 sig=${3:-TERM}
  pid_is "$name" "$pid" || return 0
  kill -s "$sig" "$pid" 2>/dev/null || true
  if ! wait_for "$STOP_WAIT_S" not pid_is "$name" "$pid"; then
    echo "$PROG: $name (pid $pid) did not stop within $STOP_WAIT_S s; killing it" >&2
    kill -s KILL "$pid" 2>/dev/null || true
  fi
}

queue_empty() {
  [[ -z $(slurm squeue -h -o %i 2>/dev/null) ]] && slurm squeue -h >/dev/null 2>&1
}

stop_all() {
  load_state || return 0
  local ctld
  ctld=$(pid_of "$SLURM_DIR/slurmctld.pid")
  if pid_is slurmctld "$ctld"; then
    # Stopping slurmd leaves running jobs' slurmstepd alive: cancel the jobs first.
    local jobs
    jobs=$(slurm squeue -h -o %i 2>/dev/null || true)
    if [[ -n $jobs ]]; then
      # shellcheck disable=SC2086
      slurm scancel $jobs 2>/dev/null || true
      wait_for "$STOP_WAIT_S" queue_empty ||
        echo "$PROG: jobs still queued after $STOP_WAIT_S s: $(slurm squeue -h -o %i 2>/dev/null | tr '\n' ' ')" >&2
    fi
  fi
  stop_pid slurmd "$(pid_of "$SLURM_DIR/slurmd.pid")"
  stop_pid slurmctld "$ctld"
  stop_pid munged "$(pid_of "$RUN/munge/munged.pid")"
  local pm
  pm=$(pid_of "$RUN/pg/data/postmaster.pid")
  if pid_is postgres "$pm"; then
    # Fast shutdown: plain SIGTERM ("smart") would wait for every client to disconnect.
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$RUN/pg/data" -m fast -w -t "$STOP_WAIT_S" stop \
      </dev/null >>"$RUN/pg/pg_ctl.log" 2>&1 || true
    stop_pid postgres "$pm" INT
  fi
}

# ---- starting ----------------------------------------------------------------------------------
# Stops whatever started, then reports WHAT failed and the log to read, on one line: LOG, or
# OUTPUT (the daemon's stdout and stderr) where LOG is empty and OUTPUT is not.
fail() {
  local what=$1 log=$2 output=${3:-}
  stop_all >/dev/null 2>&1 || true
  rm -f "$ENV_FILE"
  if [[ ! -s $log && -n $output && -s $output ]]; then
    log=$output
  fi
  die "$what; read $log"
}

# Whether USER can enter PATH (every parent included).
can_enter() {
  if [[ $1 == "$ME" ]]; then
    test -x "$2" -a -r "$2"
  else
    runuser -u "$1" -- test -x "$2" -a -r "$2"
  fi
}

choose_run() {
  chmod 0755 "$DIR"
  # Sockets: the longest is about DIR/slurm-spool/<node>_<job>.<step>, and sun_path holds 107.
  if ((${#DIR} <= 64)) && can_enter "$PG_USER" "$DIR" && can_enter "$MUNGE_USER" "$DIR"; then
    RUN=$DIR
    return
  fi
  RUN=/tmp/filtermon-services-$(printf %s "$DIR" | sha256sum | cut -c1-12)
  mkdir -p "$RUN"
  [[ -O $RUN && ! -L $RUN ]] || die "$RUN exists and is not ours: remove it"
  chmod 0755 "$RUN"
}

start_postgres() {
  local pg=$RUN/pg
  rm -rf "$pg"
  mkdir -p "$pg"
  chmod 0755 "$pg"
  [[ $PG_USER == "$ME" ]] || chown "$PG_USER:" "$pg"
  "${AS_PG[@]}" "$PG_BIN/initdb" -D "$pg/data" -A trust -U postgres --no-sync --no-locale -E UTF8 \
    </dev/null >"$pg/initdb.log" 2>&1 || fail "initdb into $pg/data failed" "$pg/initdb.log"
  # Every user is trusted but one, whose password is checked: the tests log in with a wrong
  # one. The first matching line of pg_hba.conf wins.
  sed -i '1i host all filtermon_password 127.0.0.1/32 scram-sha-256' "$pg/data/pg_hba.conf"
  detached "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$pg/data" -l "$pg/postgres.log" -w -t "$START_WAIT_S" \
    -o "-k '$pg' -p $PG_PORT -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start </dev/null >"$pg/pg_ctl.log" 2>&1 ||
    fail "PostgreSQL did not start on 127.0.0.1:$PG_PORT" "$pg/postgres.log" "$pg/pg_ctl.log"
  wait_for "$START_WAIT_S" "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" ||
    fail "PostgreSQL does not answer on 127.0.0.1:$PG_PORT" "$pg/postgres.log"
}

start_munge() {
  local m=$RUN/munge
  rm -rf "$m"
  mkdir -p "$m"
  head -c 1024 /dev/urandom >"$m/munge.key"
  chmod 0400 "$m/munge.key"
  # munged wants its folder 0755 and its own (with 0700: "Socket is inaccessible").
  chmod 0755 "$m"
  [[ $MUNGE_USER == "$ME" ]] || chown -R "$MUNGE_USER:" "$m"
  detached "${AS_MUNGE[@]}" munged --key-file="$m/munge.key" --socket="$m/munge.sock" \
    --pid-file="$m/munged.pid" --log-file="$m/munged.log" --seed-file="$m/munged.seed" \
    </dev/null >"$m/munged.out" 2>&1 || fail "munged did not start" "$m/munged.log" "$m/munged.out"
  wait_for "$START_WAIT_S" munge -n -S "$m/munge.sock" ||
    fail "munged does not answer on $m/munge.sock" "$m/munged.log"
}

write_slurm_conf() {
  local node_line=$1 s=$SLURM_DIR spool=$RUN/slurm-spool
  rm -rf "$s/state" "$spool"
  mkdir -p "$s/state" "$spool"
  chmod 0755 "$s"
  cat >"$s/slurm.conf.tmp" <<EOF
# Written by scripts/services.sh: a one-node cluster for filtermon's tests.
ClusterName=filtermon
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=$ME
SlurmdUser=$ME
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$RUN/munge/munge.sock
StateSaveLocation=$s/state
SlurmdSpoolDir=$spool
SlurmctldPidFile=$s/slurmctld.pid
SlurmdPidFile=$s/slurmd.pid
SlurmctldLogFile=$s/slurmctld.log
SlurmdLogFile=$s/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$s/jobcomp.txt
MailProg=/bin/true
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=5
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$s/slurm.conf.tmp" "$s/slurm.conf"
}

start_slurm() {
  local s=$SLURM_DIR conf=$SLURM_DIR/slurm.conf
  rm -f "$s/slurmctld.log" "$s/slurmd.log"
  SLURM_CONF=$conf detached slurmctld -c -f "$conf" </dev/null >"$s/slurmctld.out" 2>&1 ||
    fail "slurmctld did not start" "$s/slurmctld.log" "$s/slurmctld.out"
  wait_for "$START_WAIT_S" bash -c "SLURM_CONF='$conf' timeout 10 scontrol ping | grep -q 'is UP'" ||
    fail "slurmctld does not answer on port $CTLD_PORT within $START_WAIT_S s" "$s/slurmctld.log"
  SLURM_CONF=$conf detached slurmd -f "$conf" </dev/null >"$s/slurmd.out" 2>&1 ||
    fail "slurmd did not start" "$s/slurmd.log" "$s/slurmd.out"
  wait_for "$START_WAIT_S" node_is idle ||
    fail "node $NODE is not idle within $START_WAIT_S s (state: $(node_state || echo unknown))" "$s/slurmd.log"
  # slurmctld's main scheduler makes its first pass a few seconds after the start; until then a
  # job waits pending. Ready means it has run once, so that the first job starts as fast as the rest.
  wait_for "$START_WAIT_S" scheduler_ran ||
    fail "slurmctld's scheduler did not run within $START_WAIT_S s" "$s/slurmctld.log"
}

scheduler_ran() {
  slurm sdiag 2>/dev/null | awk '/^Main schedule statistics/ { main = 1 }
    main && /Total cycles:/ { exit !($3 > 0) }
    END { if (!main) exit 1 }'
}

up() {
  if alive; then
    cat "$ENV_FILE"
    return
  fi
  # Whatever is recorded but no longer whole is stopped and started afresh.
  stop_all >/dev/null 2>&1 || true
  rm -f "$ENV_FILE" "$STATE"

  for tool in python3 munged munge slurmctld slurmd scontrol sinfo sdiag sbatch; do
    command -v "$tool" >/dev/null 2>&1 ||
      die "$tool not found: install Debian's slurm-wlm and munge (python3 picks ports), or set FILTERMON_SKIP_CLUSTER=1 for the tests"
  done
  PG_BIN=$(pg_bindir)
  local node_line
  node_line=$(slurmd -C 2>/dev/null | head -n 1) || true
  [[ $node_line =~ ^NodeName=([^[:space:]]+)[[:space:]] ]] || die "slurmd -C printed no NodeName line: $node_line"
  NODE=${BASH_REMATCH[1]}
  choose_run
  read -r PG_PORT CTLD_PORT SLURMD_PORT < <(free_ports 3)
  [[ -n $SLURMD_PORT ]] || die "could not pick free ports with python3"
  mkdir -p "$SLURM_DIR"
  # Recorded before anything starts, so that `down` (or the next `up`) can stop a partial start.
  {
    printf 'RUN=%q\nPG_BIN=%q\nPG_PORT=%q\n' "$RUN" "$PG_BIN" "$PG_PORT"
    printf 'CTLD_PORT=%q\nSLURMD_PORT=%q\nNODE=%q\n' "$CTLD_PORT" "$SLURMD_PORT" "$NODE"
  } >"$STATE"

  start_postgres
  start_munge
  write_slurm_conf "$node_line"
  start_slurm

  printf 'FILTERMON_TEST_POSTGRES=postgres://postgres@127.0.0.1:%s/postgres\nSLURM_CONF=%s\n' \
    "$PG_PORT" "$SLURM_DIR/slurm.conf" >"$ENV_FILE.tmp"
  mv "$ENV_FILE.tmp" "$ENV_FILE"
  cat "$ENV_FILE"
}

down() {
  stop_all
  rm -f "$ENV_FILE"
}

# Several test binaries may call `up` at once: one at a time. The daemons start `detached`,
# without fd 9, or they would hold the lock for as long as they live.
exec 9>"$DIR/lock"
flock -w "$LOCK_WAIT_S" 9 || die "another services.sh holds $DIR/lock for more than $LOCK_WAIT_S s"
"$ACTION"
