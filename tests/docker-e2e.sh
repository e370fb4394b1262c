#!/usr/bin/env bash
# End-to-end test of docker-compose.yml: a real secure 3-node cluster in containers, driven from
# the host with curl, psql and `ranged workload`, through node1's published ports on 127.0.0.1.
# Kills a node, cuts one off the network, restarts the whole cluster on its volumes.
#
#   bash tests/docker-e2e.sh
#
# Skips (exit 0, with the reason) when no Docker engine answers or no Compose is installed.
# Builds debian:bookworm-slim with debootstrap if the engine lacks it (docker/build-base-image.sh),
# the release binary, and the image ranged:local. Every wait has a deadline; the project (its
# containers, network and volumes) and the temporary files are removed on any exit.
# Needs on the host: curl, psql, python3 (JSON), cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

START=$SECONDS
say() { printf '[docker-e2e %4ds] %s\n' "$((SECONDS - START))" "$*"; }
CHECKS=0
ok() { CHECKS=$((CHECKS + 1)); say "ok $CHECKS: $*"; }
fail() { say "FAIL: $*"; exit 1; }

# --- can this machine run it at all? ---------------------------------------------------------
if ! command -v docker >/dev/null 2>&1; then
    say "SKIPPED: no docker command on this machine"
    exit 0
fi
if ! timeout 30 docker info >/dev/null 2>&1; then
    say "SKIPPED: no Docker engine answers ('docker info' failed)"
    exit 0
fi
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
else
    say "SKIPPED: a Docker engine answers but neither 'docker compose' nor 'docker-compose' is installed"
    exit 0
fi
for tool in curl psql python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is needed on the host"
done
say "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?'))"

# --- the project and its cleanup -------------------------------------------------------------
export COMPOSE_PROJECT_NAME="ranged-e2e-$$"
TMP=$(mktemp -d /tmp/ranged-e2e.XXXXXX)
SLEEPER_PID=""
WATCHDOG_PID=""
compose() { "${COMPOSE[@]}" "$@"; }
cleanup() {
    local rc=$?
    trap - EXIT
    if [ -n "$SLEEPER_PID" ]; then kill "$SLEEPER_PID" 2>/dev/null || true; fi
    if [ -n "$WATCHDOG_PID" ]; then kill "$WATCHDOG_PID" 2>/dev/null || true; fi
    if [ "$rc" -ne 0 ]; then
        say "failed (exit $rc): container states and logs follow"
        timeout 60 "${COMPOSE[@]}" ps 2>&1 || true
        timeout 60 "${COMPOSE[@]}" logs --no-color --tail 80 2>&1 || true
    fi
    say "cleanup: down -v"
    timeout 120 "${COMPOSE[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
    rm -rf "$TMP"
    if [ "$rc" -eq 0 ]; then
        say "PASSED: $CHECKS checks in $((SECONDS - START))s"
        echo "docker-e2e: $CHECKS passed, 0 failed"
    else
        echo "docker-e2e: $CHECKS passed, 1 failed"
    fi
    exit "$rc"
}
trap cleanup EXIT
on_signal() { exit 130; }
trap on_signal INT TERM

# Host ports: node1's defaults, or the next free pair (something else may hold 8080/26257).
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for offset in 0 10000 20000 30000 1 2 3; do
    HOST_HTTP_PORT=$((8080 + offset)) HOST_SQL_PORT=$((26257 + offset))
    if ! port_busy "$HOST_HTTP_PORT" && ! port_busy "$HOST_SQL_PORT"; then break; fi
done
export HOST_HTTP_PORT HOST_SQL_PORT
API="https://127.0.0.1:$HOST_HTTP_PORT/api/v2"
PASSWORD=$(head -n 1 docker/root-password)
CA="$TMP/ca.crt"
PGURL="postgresql://root:$PASSWORD@127.0.0.1:$HOST_SQL_PORT/defaultdb?sslmode=verify-full&sslrootcert=$CA&connect_timeout=10"

# --- helpers ---------------------------------------------------------------------------------
# json EXPR: evaluates a Python expression over the JSON document on stdin, bound to `d`.
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); r=eval(sys.argv[1]); print(json.dumps(r) if isinstance(r,(dict,list)) else r)' "$1"; }
# get PATH: the body of an authenticated GET (fails on a non-2xx answer).
get() { curl -fsS --max-time 20 --cacert "$CA" -H "X-Cockroach-API-Session: $TOKEN" "$API$1"; }
sql() { timeout 60 psql "$PGURL" -X -q -t -A -v ON_ERROR_STOP=1 -c "$1"; }
# retry SECONDS WHAT COMMAND...: runs COMMAND every 2 s until it succeeds or the deadline passes.
retry() {
    local limit=$1 what=$2 deadline=$((SECONDS + $1))
    shift 2
    until "$@" >"$TMP/retry.out" 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            cat "$TMP/retry.out"
            fail "$what: not within ${limit}s"
        fi
        sleep 2
    done
}
# The container of a service, running or exited (`ps -q` of Compose v2 omits exited ones).
cid() {
    docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
        --filter "label=com.docker.compose.service=$1" | head -n 1
}
# quiet: runs a compose command with its output in a file, shown only if it fails.
quiet() { timeout 300 "${COMPOSE[@]}" "$@" >"$TMP/compose.out" 2>&1 || { cat "$TMP/compose.out"; fail "${COMPOSE[*]} $*"; }; }
# failed_nodes PATH: the node ids a fan-out reports in errors (or response_error).
failed_nodes() {
    get "$1" | json "sorted({e['node_id'] for e in (d.get('errors') or []) + (d.get('response_error') or [])})"
}
health() { docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$(cid "$1")"; }
all_healthy() {
    local n
    for n in node1 node2 node3 gateway; do [ "$(health "$n")" = healthy ] || return 1; done
}
init_done() {
    [ "$(docker inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$(cid init)")" = "exited 0" ]
}
# Node ids by service name, from /nodes/ (address_field is the advertised node1:26357).
node_id() { get /nodes/ | json "[n['node_id'] for n in d['nodes'] if n['address']['address_field'] == '$1:26357'][0]"; }
liveness() { get /nodes/ | json "[n['liveness_status'] for n in d['nodes'] if n['address']['address_field'] == '$1:26357'][0]"; }
live_count() { get /nodes/ | json "sum(1 for n in d['nodes'] if n['liveness_status'] == 3)"; }
three_live() { [ "$(live_count)" = 3 ]; }
not_live() { [ "$(liveness "$1")" != 3 ]; }
count_rows() { sql "SELECT count(*) FROM e2e"; }

# --- build -----------------------------------------------------------------------------------
bash docker/build-base-image.sh
say "cargo build --release"
cargo build --release --locked --quiet
docker build -t ranged:local . >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log"; fail "docker build"; }
ok "image ranged:local built from target/release/ranged ($(docker image inspect --format '{{.Size}}' ranged:local) bytes)"
[ "$(docker run --rm --entrypoint id ranged:local -u)" != 0 ] || fail "the image runs as root"
ok "the image runs as a non-root user ($(docker run --rm --entrypoint id ranged:local -un))"
compose config -q
ok "'${COMPOSE[*]} config' accepts docker-compose.yml"

# The cluster part is bounded as a whole too: past 10 minutes (E2E_CLUSTER_LIMIT seconds) the script stops (and cleans up).
# Every command in it has its own timeout, so the TERM is acted on promptly.
(
    trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    sleep "${E2E_CLUSTER_LIMIT:-600}" &
    nap=$!
    wait "$nap"
    echo "[docker-e2e] FAIL: the cluster checks took over ${E2E_CLUSTER_LIMIT:-600}s"
    kill -TERM $$
) 2>/dev/null &
WATCHDOG_PID=$!

# --- up --------------------------------------------------------------------------------------
say "up -d (project $COMPOSE_PROJECT_NAME, host ports $HOST_HTTP_PORT and $HOST_SQL_PORT)"
quiet up -d --no-build
retry 180 "node1..3 and gateway healthy" all_healthy
retry 60 "init exited 0" init_done
ok "node1, node2, node3 and gateway are healthy; init exited 0 ($(docker logs "$(cid init)" 2>&1 | tail -n 1))"

docker cp "$(cid node1):/var/lib/ranged/certs/ca.crt" "$CA"
[ -z "$(timeout 60 "${COMPOSE[@]}" exec -T node1 sh -c 'ls /var/lib/ranged/certs/ca.key 2>/dev/null')" ] || fail "ca.key reached the nodes"
ok "CA copied from the certs volume; ca.key is not on the nodes"

code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$CA" "$API/health/?ready=true")
[ "$code" = 200 ] || fail "health/?ready=true from the host: $code"
ok "GET /health/?ready=true over HTTPS from the host, verified against the CA: 200"

TOKEN=$(curl -fsS --max-time 20 --cacert "$CA" -d "username=root&password=$PASSWORD" \
    -H 'Content-Type: application/x-www-form-urlencoded' "$API/login/" | json "d['session']")
[ -n "$TOKEN" ] || fail "no session token"
ok "POST /login/ as root: session token received"
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$CA" "$API/nodes/")
[ "$code" = 401 ] || fail "/nodes/ without a token answered $code"
ok "/nodes/ without a token: 401"

retry 60 "3 LIVE nodes" three_live
ok "/nodes/ lists 3 LIVE nodes: $(get /nodes/ | json "', '.join(f\"n{n['node_id']}={n['address']['address_field']}\" for n in d['nodes'])")"
N1=$(node_id node1) N2=$(node_id node2) N3=$(node_id node3)
gateway_nodes=$(timeout 60 "${COMPOSE[@]}" exec -T gateway curl -fsS --max-time 20 --cacert /var/lib/ranged/certs/ca.crt \
    -H "X-Cockroach-API-Session: $TOKEN" https://gateway:8080/api/v2/nodes/ | json "len(d['nodes'])")
[ "$gateway_nodes" = 3 ] || fail "the gateway lists $gateway_nodes nodes"
ok "the standalone gateway (https://gateway:8080, inside the network) accepts the token and lists 3 nodes"

# --- SQL, workload, hot ranges, sessions -----------------------------------------------------
sql "CREATE TABLE e2e (k INT PRIMARY KEY, v STRING)"
values=$(for i in $(seq 1 100); do printf "(%d, 'row %d')," "$i" "$i"; done)
sql "INSERT INTO e2e VALUES ${values%,}"
ROWS=100
[ "$(count_rows)" = $ROWS ] || fail "count after insert: $(count_rows)"
ok "psql over TLS (verify-full) on 127.0.0.1:$HOST_SQL_PORT: CREATE TABLE e2e, INSERT 100 rows, count(*) = 100"

PGAPPNAME=e2e-sleeper timeout 60 psql "$PGURL" -X -q -c "SELECT pg_sleep(45)" >/dev/null 2>&1 &
SLEEPER_PID=$!

timeout -k 10 60 target/release/ranged workload run kv --url "$PGURL" --duration 8s --concurrency 2 >"$TMP/workload.out" 2>&1 \
    || { cat "$TMP/workload.out"; fail "ranged workload"; }
ok "ranged workload run kv for 8s through node1: $(tail -n 1 "$TMP/workload.out")"

hot_names() { get "/ranges/hot/" | json "sorted({r.get('table_name') for r in d['ranges'] if r.get('table_name')})"; }
names_kv() { hot_names | grep -q '"kv"'; }
retry 30 "/ranges/hot/ names kv" names_kv
ok "/ranges/hot/ names the workload's table: $(hot_names) (top: $(get /ranges/hot/ | json "d['ranges'][0]['table_name']"))"

sleeper_seen() {
    get /sessions/ | json "[s for s in d['sessions'] if s.get('application_name') == 'e2e-sleeper'][0]['active_queries'][0]['sql']" \
        | grep -q pg_sleep
}
retry 20 "/sessions/ shows the psql session" sleeper_seen
ok "/sessions/ shows the psql session (application_name e2e-sleeper, running pg_sleep); summary $(get /sessions/ | json "d['summary']")"
kill "$SLEEPER_PID" 2>/dev/null || true
wait "$SLEEPER_PID" 2>/dev/null || true
SLEEPER_PID=""

# --- kill node3 ------------------------------------------------------------------------------
docker kill "$(cid node3)" >/dev/null
say "docker kill node3 (node id $N3)"
retry 60 "node3 not LIVE" not_live node3
ok "/nodes/: node3 liveness_status $(liveness node3) (not LIVE 3), still listed"
node3_failed() { # PATH
    [ "$(get "$1" | json "d['summary']['failed']")" -ge 1 ] && [ "$(failed_nodes "$1")" = "[$N3]" ]
}
retry 30 "/sessions/ reports node3 failed" node3_failed /sessions/
ok "/sessions/: errors name node3 (id $N3) only: $(get /sessions/ | json "d['errors'][0]['message']"); summary $(get /sessions/ | json "d['summary']")"
retry 30 "/ranges/hot/ reports node3 failed" node3_failed /ranges/hot/
ok "/ranges/hot/: response_error names node3 only: $(get /ranges/hot/ | json "d['response_error'][0]['error_message']"); summary $(get /ranges/hot/ | json "d['summary']")"
values=$(for i in $(seq 101 150); do printf "(%d, 'row %d')," "$i" "$i"; done)
sql "INSERT INTO e2e VALUES ${values%,}"
sql "UPSERT INTO e2e VALUES (1, 'row 1 again')"
ROWS=150
[ "$(count_rows)" = $ROWS ] || fail "count with node3 down: $(count_rows)"
[ "$(sql "SELECT v FROM e2e WHERE k = 1")" = "row 1 again" ] || fail "upsert lost"
ok "with node3 down: INSERT 50 rows and an UPSERT through node1; count(*) = $ROWS"

# --- node3 rejoins ---------------------------------------------------------------------------
quiet start node3
retry 90 "node3 LIVE again" three_live
node3_healthy() { [ "$(health node3)" = healthy ]; }
retry 90 "node3 healthy" node3_healthy
ok "compose start node3: LIVE again (3 LIVE) and healthy, same node id $(node_id node3)"
# node3's own replica holds every row: the key count of e2e's range in node3's store (read
# inside its container: node3's SQL port is not published) reaches the row count.
# SHOW RANGES: start_key | end_key | range_id | range_size_mb | lease_holder | replicas
E2E_RANGE=$(sql "SHOW RANGES FROM TABLE e2e" | head -n 1 | cut -d '|' -f 3)
say "table e2e lives in range $E2E_RANGE"
node_keys() { # SERVICE: keys of e2e's range in that node's replica
    timeout 30 "${COMPOSE[@]}" exec -T "$1" ranged node ranges --host "$1:26357" --format json \
        | json "[r['keys'] for r in d if r['range_id'] == $E2E_RANGE][0]"
}
node3_has_rows() { [ "$(node_keys node3)" = "$ROWS" ]; }
retry 60 "node3's replica holds $ROWS rows" node3_has_rows
[ "$(count_rows)" = $ROWS ] || fail "count after node3 rejoined: $(count_rows)"
ok "node3's replica of range $E2E_RANGE holds $(node_keys node3) keys (node1: $(node_keys node1)); count(*) = $ROWS"

# --- cut node2 off the network ---------------------------------------------------------------
NET=$(docker inspect --format '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$(cid node2)" | awk '{print $1}')
FANOUT=4 # ranged's default --fanout-timeout
docker network disconnect "$NET" "$(cid node2)"
say "docker network disconnect $NET node2 (node id $N2)"
# Every /sessions/ call must answer 200 within the fan-out deadline (+2 s), and soon name node2.
node2_unreachable() {
    local t0 t1 body ms
    t0=$(date +%s%N)
    body=$(get /sessions/)
    t1=$(date +%s%N)
    ms=$(((t1 - t0) / 1000000))
    [ "$ms" -le $(((FANOUT + 2) * 1000)) ] || { echo "/sessions/ took ${ms}ms"; return 2; }
    if [ "$(json "d['summary']['failed']" <<<"$body")" -ge 1 ] \
        && [ "$(json "sorted({e['node_id'] for e in d['errors']})" <<<"$body")" = "[$N2]" ]; then
        echo "$ms $(json "d['summary']" <<<"$body")" >"$TMP/partition"
        return 0
    fi
    return 1
}
deadline=$((SECONDS + 30))
while :; do
    rc=0
    node2_unreachable >"$TMP/why" 2>&1 || rc=$?
    [ "$rc" -eq 0 ] && break
    [ "$rc" -eq 2 ] && fail "$(cat "$TMP/why")"
    [ "$SECONDS" -lt "$deadline" ] || fail "/sessions/ did not report node2 within 30s: $(get /sessions/ | json "d['summary']")"
    sleep 1
done
read -r ms summary <"$TMP/partition"
ok "/sessions/ with node2 cut off: 200 in ${ms}ms (fan-out deadline ${FANOUT}s), errors name node2 (id $N2) only, summary $summary"
retry 60 "node2 not LIVE" not_live node2
ok "/nodes/: node2 liveness_status $(liveness node2) (not LIVE)"
sql "INSERT INTO e2e VALUES (1001, 'during partition')"
ROWS=$((ROWS + 1))
[ "$(count_rows)" = $ROWS ] || fail "count with node2 cut off: $(count_rows)"
ok "with node2 cut off: a write and count(*) = $ROWS through node1"

docker network connect --alias node2 "$NET" "$(cid node2)"
say "docker network connect $NET node2"
retry 90 "node2 LIVE again" three_live
node2_back() { [ "$(get /sessions/ | json "d['summary']['failed']")" = 0 ]; }
retry 60 "/sessions/ without failures" node2_back
node2_has_rows() { [ "$(node_keys node2)" = "$ROWS" ]; }
retry 60 "node2's replica holds $ROWS rows" node2_has_rows
ok "node2 reconnected: 3 LIVE, /sessions/ summary $(get /sessions/ | json "d['summary']"), node2's replica holds $ROWS keys"

# --- down (volumes kept) and up again --------------------------------------------------------
quiet down --timeout 30
[ -z "$(compose ps -q)" ] || fail "containers left after down"
ok "down: containers and network removed, volumes kept ($(docker volume ls -q --filter "name=${COMPOSE_PROJECT_NAME}_" | wc -l) volumes)"
quiet up -d --no-build
retry 180 "healthy after up" all_healthy
retry 60 "init exited 0" init_done
docker logs "$(cid init)" 2>&1 | grep -q "already initialized" || fail "init on the second up: $(docker logs "$(cid init)" 2>&1)"
ok "up again: all healthy; init exited 0 ($(docker logs "$(cid init)" 2>&1 | tail -n 1))"
retry 60 "3 LIVE nodes after restart" three_live
code=$(curl -sS -o "$TMP/nodes.json" -w '%{http_code}' --max-time 20 --cacert "$CA" -H "X-Cockroach-API-Session: $TOKEN" "$API/nodes/")
[ "$code" = 200 ] || fail "the old token after down/up: $code $(cat "$TMP/nodes.json")"
ok "the login token from before down/up still works: /nodes/ 200, $(json "len(d['nodes'])" <"$TMP/nodes.json") nodes"
retry 60 "SQL after restart" count_rows
[ "$(count_rows)" = $ROWS ] || fail "count after down/up: $(count_rows)"
[ "$(sql "SELECT v FROM e2e WHERE k = 1001")" = "during partition" ] || fail "row 1001 lost"
[ "$(sql "SELECT count(*) FROM kv.kv")" -gt 0 ] || fail "kv.kv empty after restart"
ok "after down/up: count(*) = $ROWS, the partition-time row and $(sql "SELECT count(*) FROM kv.kv") kv.kv rows are there"

# --- down -v ---------------------------------------------------------------------------------
quiet down -v --timeout 30
left=$(docker volume ls -q --filter "name=${COMPOSE_PROJECT_NAME}_" | wc -l)
[ "$left" = 0 ] || fail "$left volumes left after down -v"
ok "down -v: containers, network and volumes removed"
