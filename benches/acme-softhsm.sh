#!/usr/bin/env bash
# Benchmark 2: acme-serve with the intermediate's key in SoftHSM (PKCS#11)
# and in the software key store, same load generator and concurrency.
#   benches/acme-softhsm.sh            CONCURRENCY=32 SECONDS_PER_RUN=20 by default
# Needs: softhsm2, jq, python3.
set -euo pipefail
source "$(dirname "$0")/acme-common.sh"
start_dns
for backend in soft softhsm; do
  start_sandbox "$backend" "$backend"
  rss_start "$SANDBOX_PID"
  bench "$backend" "$DIRECTORY" "$TLS_CA"
  echo "$backend peak RSS while loaded: $(rss_stop "$SANDBOX_PID") MB"
  stop_pid "$SANDBOX_PID"
done
jq -rn --slurpfile s "$WORK/soft.json" --slurpfile h "$WORK/softhsm.json" \
  'if $s[0].per_second > 0 then "softhsm / soft issuances/s: \($h[0].per_second / $s[0].per_second * 100 | round / 100)" else "the soft store issued nothing" end'
