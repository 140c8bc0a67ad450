# Shared by the benches/acme-*.sh scripts (sourced, not run): loopback DNS,
# the acme-serve sandbox, the load generator and an RSS sampler. Every
# process started here is recorded in PIDS and killed by the caller's trap.
#
# Knobs (environment): CONCURRENCY (32), SECONDS_PER_RUN (20), KEYRITE
# (target/release/keyrite, built with `cargo build --release --locked`).

CONCURRENCY=${CONCURRENCY:-32}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-20}
ZONE=bench.test
PIDS=()

cd "$(dirname "${BASH_SOURCE[0]}")/.."
KEYRITE=${KEYRITE:-$PWD/target/release/keyrite}
[ -x "$KEYRITE" ] || cargo build --release --locked
WORK=$(mktemp -d)

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

HTTP01_PORT=$(free_port)
DNS_PORT=$(free_port)

# Every name under the zone resolves to 127.0.0.1 (A only: the bench's
# http-01 responder listens on IPv4 loopback). pebble-challtestsrv ships in
# Debian's pebble package.
start_dns() {
  pebble-challtestsrv -dns01 "127.0.0.1:$DNS_PORT" -http01 "" -https01 "" -tlsalpn01 "" \
    -management "127.0.0.1:$(free_port)" -defaultIPv4 127.0.0.1 -defaultIPv6 "" >"$WORK/dns.log" 2>&1 &
  PIDS+=($!)
  sleep 0.5
}

# start_sandbox NAME BACKEND: `keyrite rehearse --serve` on throwaway keys
# (BACKEND softhsm or soft); sets SANDBOX_PID, SANDBOX_DIR, DIRECTORY, TLS_CA.
# The rehearse process is the acme-serve process once the sandbox is ready.
start_sandbox() {
  SANDBOX_DIR="$WORK/$1"
  # Rate limits off: the generator opens an account per flow from one
  # address, which the default limits refuse after 100.
  "$KEYRITE" rehearse --dir "$SANDBOX_DIR" --backend "$2" --serve \
    --http01-port "$HTTP01_PORT" --dns "127.0.0.1:$DNS_PORT" --rate-limits benches/no-limits.toml \
    >"$WORK/$1.log" 2>&1 &
  SANDBOX_PID=$!
  PIDS+=("$SANDBOX_PID")
  for _ in $(seq 600); do
    if [ -s "$SANDBOX_DIR/rehearsal.json" ] && jq -e .acme_directory "$SANDBOX_DIR/rehearsal.json" >/dev/null 2>&1; then
      DIRECTORY=$(jq -r .acme_directory "$SANDBOX_DIR/rehearsal.json")
      TLS_CA=$(jq -r .acme_tls_ca "$SANDBOX_DIR/rehearsal.json")
      return 0
    fi
    kill -0 "$SANDBOX_PID" 2>/dev/null || { cat "$WORK/$1.log" >&2; echo "the $2 sandbox did not start" >&2; exit 1; }
    sleep 0.2
  done
  echo "the $2 sandbox was not ready after 120 s" >&2
  exit 1
}

stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# rss_start PID: samples VmRSS every 100 ms into $WORK/rss.PID until
# rss_stop PID, which prints the largest sample in MB.
rss_start() {
  ( max=0
    while [ ! -e "$WORK/rss.$1.stop" ] && kill -0 "$1" 2>/dev/null; do
      kb=$(awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0)
      [ "${kb:-0}" -gt "$max" ] && max=$kb && echo "$max" >"$WORK/rss.$1"
      sleep 0.1
    done ) &
  PIDS+=($!)
}
rss_stop() {
  touch "$WORK/rss.$1.stop"
  sleep 0.3
  awk '{printf "%.1f", $1 / 1024}' "$WORK/rss.$1"
  rm -f "$WORK/rss.$1.stop" "$WORK/rss.$1"
}

# bench LABEL DIRECTORY CA_BUNDLE: one load-generator run; prints a summary
# line and keeps the JSON in $WORK/LABEL.json.
bench() {
  "$KEYRITE" acme bench --directory "$2" --ca-bundle "$3" --concurrency "$CONCURRENCY" \
    --seconds "$SECONDS_PER_RUN" --domain-suffix "$ZONE" --http01-port "$HTTP01_PORT" --json >"$WORK/$1.json" || true
  jq -r --arg l "$1" \
    '"\($l): \(.issued) issued, \(.errors) errors \(.errors_by_type), \(.per_second) issuances/s, p50 \(.p50_ms) ms, p99 \(.p99_ms) ms, concurrency \(.concurrency)"' \
    "$WORK/$1.json"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "concurrency $CONCURRENCY, $SECONDS_PER_RUN s per run"
