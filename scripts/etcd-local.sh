#!/usr/bin/env bash
# A local 3-member etcd cluster on loopback, for the cluster tests and `make cluster-demo`.
#
#   scripts/etcd-local.sh start  [DIR]     start 3 members under DIR (default target/etcd)
#   scripts/etcd-local.sh stop   [DIR]     stop exactly the members started there (their PID files)
#   scripts/etcd-local.sh status [DIR]     each member's status (leader, raft index, db size)
#   scripts/etcd-local.sh endpoints [DIR]  the client URLs, comma-separated
#   scripts/etcd-local.sh kill-member N [DIR]    SIGKILL member N (1..3)
#   scripts/etcd-local.sh pause-member N [DIR]   SIGSTOP member N
#   scripts/etcd-local.sh resume-member N [DIR]  SIGCONT member N
#   scripts/etcd-local.sh start-member N [DIR]   start member N again on its data dir
#
# Ports: OUBLI_ETCD_BASE_PORT (client ports BASE, BASE+2, BASE+4; peer ports one above each), or free
# ports found by asking the kernel. Every member binds 127.0.0.1 only. OUBLI_ETCD_SNAPSHOT_COUNT and
# OUBLI_ETCD_MAX_WALS pass through to etcd at the first start and are kept in DIR/settings for
# later ones (the erasure's write-ahead-log retirement needs a small snapshot count; etcd's
# defaults are 100000 and 5; etcd itself reads ETCD_* variables as flags, hence the prefix).
# Every wait is bounded.
set -euo pipefail

cmd=${1:-}
shift || true
member=""
case "$cmd" in
  kill-member|pause-member|resume-member|start-member) member=${1:?member number 1..3}; shift ;;
esac
dir=${1:-target/etcd}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

etcd_bin=$(command -v etcd || true)
[ -n "$etcd_bin" ] || { echo "etcd not found: run 'make deps' (Debian's etcd-server)" >&2; exit 1; }

pid_of() { cat "$dir/m$1.pid" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# The ports, chosen once per DIR and kept in DIR/ports so that a member restarts on its own.
ports() {
  if [ ! -s "$dir/ports" ]; then
    if [ -n "${OUBLI_ETCD_BASE_PORT:-}" ]; then
      b=$OUBLI_ETCD_BASE_PORT
      echo "$b $((b + 1)) $((b + 2)) $((b + 3)) $((b + 4)) $((b + 5))" >"$dir/ports"
    else
      python3 - >"$dir/ports" <<'EOF'
import socket
socks = []
for _ in range(6):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
    fi
  fi
  read -r c1 p1 c2 p2 c3 p3 <"$dir/ports"
}

# The members' settings, chosen at the first start and kept in DIR/settings, so that a member
# started again (start-member) runs as the others do.
settings() {
  if [ ! -s "$dir/settings" ]; then
    echo "${OUBLI_ETCD_SNAPSHOT_COUNT:-100000} ${OUBLI_ETCD_MAX_WALS:-5}" >"$dir/settings"
  fi
  read -r snapshot_count max_wals <"$dir/settings"
}

endpoints() { ports; echo "http://127.0.0.1:$c1,http://127.0.0.1:$c2,http://127.0.0.1:$c3"; }

start_one() { # N STATE
  local n=$1 state=$2 c p cluster
  ports
  settings
  eval "c=\$c$n; p=\$p$n"
  cluster="m1=http://127.0.0.1:$p1,m2=http://127.0.0.1:$p2,m3=http://127.0.0.1:$p3"
  if alive "$n"; then return 0; fi
  nohup "$etcd_bin" --name "m$n" --data-dir "$dir/m$n" \
    --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "$cluster" --initial-cluster-state "$state" \
    --initial-cluster-token "oubli-$(basename "$dir")-$c1" \
    --snapshot-count "$snapshot_count" --max-wals "$max_wals" \
    --log-outputs "$dir/m$n.log" --logger zap \
    >>"$dir/m$n.out" 2>&1 &
  echo $! >"$dir/m$n.pid"
}

healthy() { # N: the member answers its health check
  local c
  ports
  eval "c=\$c$1"
  ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$c" --command-timeout 1s endpoint health >/dev/null 2>&1
}

wait_healthy() { # N...: at most 30 s
  local n i
  for n in "$@"; do
    for i in $(seq 1 150); do
      if healthy "$n"; then break; fi
      alive "$n" || { echo "etcd member m$n exited; its log: $dir/m$n.log" >&2; tail -5 "$dir/m$n.out" >&2 || true; exit 1; }
      [ "$i" -eq 150 ] && { echo "etcd member m$n not healthy after 30 s; its log: $dir/m$n.log" >&2; exit 1; }
      sleep 0.2
    done
  done
}

stop_one() { # N: TERM, at most 10 s, then KILL
  local n=$1 p i
  p=$(pid_of "$n")
  [ -n "$p" ] || return 0
  kill -CONT "$p" 2>/dev/null || true
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  rm -f "$dir/m$n.pid"
}

case "$cmd" in
  start)
    state=new
    [ -d "$dir/m1/member" ] && state=existing
    for n in 1 2 3; do start_one "$n" "$state"; done
    wait_healthy 1 2 3
    endpoints >"$dir/endpoints"
    echo "etcd: 3 members on $(cat "$dir/endpoints") (data under $dir)"
    ;;
  stop)
    for n in 1 2 3; do stop_one "$n"; done
    ;;
  status)
    ETCDCTL_API=3 etcdctl --endpoints "$(endpoints)" --command-timeout 2s endpoint status -w table
    ;;
  endpoints)
    endpoints
    ;;
  kill-member)
    p=$(pid_of "$member"); [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
    rm -f "$dir/m$member.pid"
    ;;
  pause-member)
    p=$(pid_of "$member"); [ -n "$p" ] && kill -STOP "$p"
    ;;
  resume-member)
    p=$(pid_of "$member"); [ -n "$p" ] && kill -CONT "$p"
    ;;
  start-member)
    start_one "$member" existing
    wait_healthy "$member"
    ;;
  *)
    sed -n '2,16p' "$0" >&2
    exit 2
    ;;
esac
