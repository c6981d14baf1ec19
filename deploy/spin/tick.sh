#!/bin/sh
# The timer a Spin deployment of FaaSKeeper needs (docs/platforms.md, "Timer"). Spin's HTTP
# trigger has no timer, and the spin-trigger-cron plugin can only call components that export
# its own `fermyon:spin-cron` world, which the stage files (plain wasi:http handlers) do not.
# So an ordinary process calls two public routes, as the bundled host does every 500 ms:
#
#   POST /check   heartbeat sweep: expire sessions whose pings stopped, delete expired TTL nodes
#   POST /wake    run the distributor: finishes work a failed wake-up or a crash left behind
#
# Usage:  deploy/spin/tick.sh [BASE_URL] [once]
#         BASE_URL defaults to http://127.0.0.1:3000 (spin up's default listen address);
#         FAASKEEPER_TICK_SECONDS sets the period (default 1). With "once" it runs one round
#         and exits non-zero on failure (for cron, a Kubernetes CronJob or a systemd timer).
set -u
base=${1:-http://127.0.0.1:3000}
base=${base%/}
mode=${2:-loop}
period=${FAASKEEPER_TICK_SECONDS:-1}

tick() {
    ok=0
    for route in check wake; do
        if ! curl -fsS -X POST -H 'content-type: application/json' -d '{}' \
            -o /dev/null "$base/$route"; then
            echo "tick: POST $base/$route failed" >&2
            ok=1
        fi
    done
    return $ok
}

if [ "$mode" = once ]; then
    tick
    exit $?
fi
while :; do
    tick || :
    sleep "$period"
done
