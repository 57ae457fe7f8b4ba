#!/usr/bin/env bash
# Checks the monitoring files against a real Prometheus: promtool on the scrape
# config, the alert rules and a live /metrics scrape, then a Prometheus on loopback
# that scrapes a running gateway and must answer a query with the traffic sent.
# Needs: promtool and prometheus (Debian's `prometheus`), curl, python3, and a
# built si-server (target/debug by default; SI_SERVER overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

server=${SI_SERVER:-target/debug/si-server}
work=$(mktemp -d)
pids=()
cleanup() {
    status=$?
    if [ "$status" -ne 0 ]; then
        for log in "$work"/*.log; do [ -f "$log" ] && { echo "--- $log" >&2; tail -n 40 "$log" >&2; }; done
    fi
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

promtool check config --syntax-only deploy/prometheus.yml
promtool check rules deploy/alerts.yml

gateway_port=$(free_port)
metrics_port=$(free_port)
prometheus_port=$(free_port)
sed -e "s/^listen = \"127.0.0.1:8000\"/listen = \"127.0.0.1:$gateway_port\"/" \
    -e "s/^metrics_listen = \"127.0.0.1:9464\"/metrics_listen = \"127.0.0.1:$metrics_port\"/" \
    examples/si.toml > "$work/si.toml"
SI_DATA_DIR="$work/data" "$server" --config "$work/si.toml" > "$work/gateway.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$metrics_port/metrics"

# Traffic: requests on an unknown path, counted as endpoint="other".
sent=7
for _ in $(seq 1 $sent); do curl -s -o /dev/null "http://127.0.0.1:$gateway_port/nothing-here"; done

curl -fs "http://127.0.0.1:$metrics_port/metrics" > "$work/scrape.txt"
promtool check metrics < "$work/scrape.txt"

cat > "$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: synthetic-intelligence
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prometheus_port" > "$work/prometheus.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$prometheus_port/-/ready"

query='sum(http_requests_total{endpoint="other"})'
for _ in $(seq 1 100); do
    value=$(curl -fsG "http://127.0.0.1:$prometheus_port/api/v1/query" --data-urlencode "query=$query" \
        | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")' \
        || true)
    if [ "$value" = "$sent" ]; then
        echo "prometheus: $query = $value, as sent"
        exit 0
    fi
    sleep 0.2
done
echo "prometheus never saw the traffic: $query = '${value:-}', expected $sent" >&2
exit 1
