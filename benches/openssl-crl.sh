#!/usr/bin/env bash
# Builds the same N-entry CRL with keyrite (benches/crl.rs) and with
# `openssl ca -gencrl`, and prints time and peak RSS for both.
#   benches/openssl-crl.sh [N]        (default 1000000)
set -euo pipefail
N=${1:-1000000}
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cargo bench --bench crl -- --entries "$N" --write-index "$WORK/index.txt" 2>/dev/null
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem -out c.pem \
  -subj "/CN=bench root" -days 30 2>/dev/null
printf '[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 7\nunique_subject = no\n' > ca.cnf
echo 01 > crlnumber
/usr/bin/time -f "openssl ca -gencrl: $N entries, %e s, peak RSS %M kB" \
  openssl ca -config ca.cnf -gencrl -keyfile k.pem -cert c.pem -out crl.pem 2>&1 | grep -v '^Using configuration'
echo "openssl CRL PEM $(stat -c %s crl.pem) bytes"
