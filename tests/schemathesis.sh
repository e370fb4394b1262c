#!/usr/bin/env bash
# schemathesis against the API's own OpenAPI document: a real one-node `ranged demo` (TLS, a
# logged-in admin session, the background workload so that hot ranges and sessions have rows),
# every default check, bounded to under three minutes. Exits non-zero on any finding.
#
#   bash tests/schemathesis.sh
#
# A script called by .ci/run rather than a test in the suite: it needs Python and PyPI (the
# suite needs neither) and a few minutes of a core, where `cargo nextest run` stays quick.
# Uses the debug binary the test step built (RANGED_BIN overrides; built if missing) and
# installs the pinned schemathesis with pip when it is not there.
#
# /logout/ runs on its own session after everything else: the fuzzer calls it with the
# session it is given, and the first call would log the main run out.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
START=$SECONDS
say() { printf '[schemathesis %4ds] %s\n' "$((SECONDS - START))" "$*"; }
fail() { say "FAIL: $*"; exit 1; }

installed=$(python3 -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true)
if [ "$installed" != "$SCHEMATHESIS_VERSION" ]; then
    say "installing schemathesis $SCHEMATHESIS_VERSION (found: ${installed:-none})"
    # Debian's Python refuses a plain pip install (PEP 668); the second form is for it.
    python3 -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION" 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages "schemathesis==$SCHEMATHESIS_VERSION"
fi

BIN=${RANGED_BIN:-${CARGO_TARGET_DIR:-target}/debug/ranged}
if [ ! -x "$BIN" ]; then
    say "building $BIN"
    cargo build --locked --bin ranged
fi

WORK=$(mktemp -d)
DEMO_PID=""
cleanup() {
    if [ -n "$DEMO_PID" ] && kill -0 "$DEMO_PID" 2>/dev/null; then
        # Ctrl-C is how the demo removes its temporary stores; kill it if it does not stop.
        kill -INT "$DEMO_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$DEMO_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PASSWORD="st-$(date +%s%N)"
"$BIN" demo --nodes 1 --sql-port 0 --http-port 0 --password "$PASSWORD" >"$WORK/demo.out" 2>"$WORK/demo.err" &
DEMO_PID=$!
deadline=$((SECONDS + 60))
until grep -q '^HTTP API: ' "$WORK/demo.out"; do
    kill -0 "$DEMO_PID" 2>/dev/null || { cat "$WORK/demo.err" >&2; fail "ranged demo exited"; }
    [ "$SECONDS" -lt "$deadline" ] || fail "ranged demo did not print its HTTP address within 60s"
    sleep 0.2
done
API=$(sed -n 's/^HTTP API: \(https:[^ ]*\)$/\1/p' "$WORK/demo.out")
CA=$(sed -n 's/^CA certificate: //p' "$WORK/demo.out")
say "demo serving $API"

login() {
    curl -sS --fail --max-time 10 --cacert "$CA" -d "username=demo&password=$PASSWORD" "${API}login/" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["session"])'
}

# Cases per operation and per phase; the whole run stays well under three minutes on a
# shared two-core machine, and `timeout` bounds it whatever happens. One worker: with two
# threads, Python 3.11 occasionally fails inside Hypothesis ("AST constructor recursion depth
# mismatch", a CPython bug when threads parse source at once), an error that is not a finding.
run() {
    local seconds=$1
    shift
    timeout --kill-after=5 "$seconds" python3 -c \
        'import sys; from schemathesis.cli import schemathesis; sys.argv[0] = "schemathesis"; schemathesis()' \
        --no-color run "${API}openapi.json" --tls-verify "$CA" --workers 1 --max-examples 80 "$@"
}
say "every operation but /logout/"
run 150 -H "X-Cockroach-API-Session: $(login)" --exclude-path /logout/ || fail "schemathesis found problems (above)"
say "/logout/"
run 20 -H "X-Cockroach-API-Session: $(login)" --include-path /logout/ || fail "schemathesis found problems in /logout/"
say "ok: no findings"
