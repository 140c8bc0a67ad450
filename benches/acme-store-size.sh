#!/usr/bin/env bash
# Benchmark 3 (and 5 for this run): acme-serve throughput with an empty
# store and with 1,000,000 certificates already in it, in one sandbox; and
# the server's peak RSS in each half.
#   benches/acme-store-size.sh [N]     (default 1000000; CONCURRENCY=32 SECONDS_PER_RUN=20)
# Needs: sqlite3, jq, python3.
#
# The prefill clones a certificate, its order and its authorization that
# the first run really issued, with fresh ids, serials and 10,000 accounts'
# ids, through the sqlite3 CLI in batches (each followed by a WAL
# checkpoint). The column lists are read from the database, and a column
# the script does not know (added by a later migration) takes the copied
# row's value, so the prefill keeps working as the schema grows.
set -euo pipefail
N=${1:-1000000}
source "$(dirname "$0")/acme-common.sh"
start_dns
start_sandbox store soft
DB="$SANDBOX_DIR/acme/acme.db"

rss_start "$SANDBOX_PID"
bench empty "$DIRECTORY" "$TLS_CA"
echo "empty store: peak RSS while loaded $(rss_stop "$SANDBOX_PID") MB, $(sqlite3 "$DB" 'SELECT count(*) FROM certificates') certificates after the run"

# insert_sql TABLE TEMPLATE OVERRIDES...: an INSERT … SELECT FROM n, TEMPLATE
# naming every column the table has now; a column given as NAME=EXPR gets
# EXPR, every other one (added by a later migration, say) the template's value.
insert_sql() {
  local table=$1 tmpl=$2 cols="" exprs=""
  shift 2
  for col in $(sqlite3 "$DB" "SELECT name FROM pragma_table_info('$table')"); do
    local expr="$tmpl.$col"
    for o in "$@"; do [ "${o%%=*}" = "$col" ] && expr=${o#*=}; done
    cols+="${cols:+, }$col"
    exprs+="${exprs:+, }$expr"
  done
  echo "INSERT INTO $table ($cols) SELECT $exprs FROM n, $tmpl;"
}
ACCT="'pfa' || (i % 10000)"
ORDERS=$(insert_sql orders o "id='pfo' || i" "account_id=$ACCT" "created_at=o.created_at - 600 - i" \
  "doc=json_set(o.doc, '\$.id', 'pfo' || i, '\$.account_id', $ACCT, '\$.certificate_id', 'pfc' || i)")
AUTHZS=$(insert_sql authzs z "id='pfz' || i" "account_id=$ACCT" \
  "doc=json_set(z.doc, '\$.id', 'pfz' || i, '\$.account_id', $ACCT)")
CERTS=$(insert_sql certificates c "id='pfc' || i" "serial=printf('7f%036x', i)" "account_id=$ACCT" \
  "doc=json_set(c.doc, '\$.id', 'pfc' || i, '\$.serial_hex', printf('7f%036x', i), '\$.order_id', 'pfo' || i, '\$.account_id', $ACCT)")

BATCH=100000
start=$(date +%s.%N)
for ((from = 0; from < N; from += BATCH)); do
  to=$((from + BATCH < N ? from + BATCH : N))
  sqlite3 "$DB" >/dev/null <<SQL
PRAGMA busy_timeout = 30000;
BEGIN IMMEDIATE;
CREATE TEMP TABLE n AS WITH RECURSIVE s(i) AS (SELECT $from UNION ALL SELECT i + 1 FROM s WHERE i + 1 < $to) SELECT i FROM s;
CREATE TEMP TABLE c AS SELECT * FROM certificates ORDER BY rowid LIMIT 1;
CREATE TEMP TABLE o AS SELECT * FROM orders WHERE id = (SELECT json_extract(doc, '\$.order_id') FROM c);
CREATE TEMP TABLE z AS SELECT * FROM authzs WHERE status = 'valid' ORDER BY rowid LIMIT 1;
$ORDERS
$AUTHZS
$CERTS
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
done
echo "prefilled $N certificates (with their orders and authorizations) in $(echo "$(date +%s.%N) - $start" | bc) s; store $(du -sh "$SANDBOX_DIR/acme" | cut -f1)"

rss_start "$SANDBOX_PID"
bench full "$DIRECTORY" "$TLS_CA"
echo "$(sqlite3 "$DB" 'SELECT count(*) FROM certificates') certificates in the store: peak RSS while loaded $(rss_stop "$SANDBOX_PID") MB"
jq -rn --slurpfile e "$WORK/empty.json" --slurpfile f "$WORK/full.json" \
  'if $e[0].per_second > 0 then "full / empty issuances/s: \($f[0].per_second / $e[0].per_second * 100 | round / 100)" else "the empty run issued nothing" end'
