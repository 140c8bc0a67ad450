#!/usr/bin/env bash
# Benchmark 1 (and 5 for this run): acme-serve (software-store sandbox) and
# Debian's pebble, driven by the same `keyrite acme bench` at the same
# concurrency on this machine; issuances/s, p99 of a whole flow, and the
# peak RSS of each server while it was loaded.
#   benches/acme-vs-pebble.sh          CONCURRENCY=32 SECONDS_PER_RUN=20 by default
# Needs: pebble (apt-get install pebble), jq, python3, openssl.
set -euo pipefail
source "$(dirname "$0")/acme-common.sh"
start_dns

# acme-serve: the rehearsal sandbox on the software store.
start_sandbox keyrite soft
rss_start "$SANDBOX_PID"
bench acme-serve "$DIRECTORY" "$TLS_CA"
echo "acme-serve peak RSS while loaded: $(rss_stop "$SANDBOX_PID") MB"
stop_pid "$SANDBOX_PID"

# pebble: its own TLS certificate from a throwaway CA; validation sleeps
# off (PEBBLE_VA_NOSLEEP=1) and no deliberately rejected nonces
# (PEBBLE_WFE_NONCEREJECT=0), so both servers do the same work.
# GOMAXPROCS=1: with two threads, pebble 2.4.0 deadlocks within seconds at
# 32 clients (MemoryStore.FindValidAuthorization takes its read lock twice
# while a writer waits); one thread avoids it. See docs/performance.md.
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -subj "/CN=pebble bench CA" -days 2 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.csr \
  -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >tls.ext
openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out tls.pem -days 2 -extfile tls.ext 2>/dev/null
PEBBLE_PORT=$(free_port)
cat >pebble-config.json <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$PEBBLE_PORT", "managementListenAddress": "127.0.0.1:$(free_port)",
  "certificate": "$WORK/tls.pem", "privateKey": "$WORK/tls.key", "httpPort": $HTTP01_PORT,
  "tlsPort": $(free_port), "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
cd - >/dev/null
GOMAXPROCS=${PEBBLE_GOMAXPROCS:-1} PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 pebble -config "$WORK/pebble-config.json" -dnsserver "127.0.0.1:$DNS_PORT" \
  >"$WORK/pebble.log" 2>&1 &
PEBBLE_PID=$!
PIDS+=("$PEBBLE_PID")
for _ in $(seq 100); do
  curl -sf --cacert "$WORK/ca.pem" "https://127.0.0.1:$PEBBLE_PORT/dir" >/dev/null && break
  sleep 0.1
done
rss_start "$PEBBLE_PID"
bench pebble "https://127.0.0.1:$PEBBLE_PORT/dir" "$WORK/ca.pem"
echo "pebble peak RSS while loaded: $(rss_stop "$PEBBLE_PID") MB"
jq -rn --slurpfile k "$WORK/acme-serve.json" --slurpfile p "$WORK/pebble.json" \
  'if $p[0].per_second > 0 then "acme-serve / pebble issuances/s: \($k[0].per_second / $p[0].per_second * 100 | round / 100)x" else "pebble issued nothing" end'
