#!/usr/bin/env bash
# Start, inspect and stop a local Flower federation: one SuperLink and N SuperNodes on
# loopback, with TLS and SuperNode authentication unless --insecure is given.
#
#   scripts/federation.sh start [options]   start the SuperLink, register and start N SuperNodes
#   scripts/federation.sh status [--dir D]  processes and the SuperNodes the SuperLink sees
#   scripts/federation.sh stop [--dir D]    stop every process this script started, by PID
#   scripts/federation.sh env [--dir D]     print `export FLWR_HOME=...` for the flwr CLI
#   scripts/federation.sh watch --owner PID [--dir D]
#                                           stop the federation once process PID has exited
#   scripts/federation.sh keep-warm --node I [--dir D] [--node-port-base Q]
#                                           run SuperNode I's warm launcher, restarting it
#                                           whenever it exits while the SuperNode runs
#
# Options of start:
#   -n N                SuperNodes (default 2)
#   --dir DIR           run folder (default .federation): certs/, logs/, pids/, flwr/
#   --certs DIR         CA, SuperLink certificate and SuperNode keys (default DIR/certs,
#                       made by scripts/make_certs.sh when missing)
#   --port P            SuperLink port (default 8000): Fleet, Control and Runtime APIs
#   --node-port-base Q  SuperNode i serves its local Runtime API on Q+i (default 9094)
#   --data-dirs A,B,..  SuperNode i trains on all of its own data-dir (the i-th folder)
#                       instead of partitions of the shared dataset (partition-id=i)
#   --gpus 0,1,..       SuperNode i sees only GPU number i (mod the list): one GPU each
#   --insecure          no TLS and no SuperNode authentication. UNSAFE: anyone who can
#                       reach the port can read and alter models and submit runs that
#                       execute code on every machine. Only for throwaway experiments.
#   --owner PID         the federation lives only as long as process PID (a test runner,
#                       a benchmark): a watcher (`watch`, DIR/pids/owner-watch.pid) stops it
#                       within seconds of PID's exit, however PID ended (e.g. a CI time-out)
#   --warm              SuperNodes run with --isolation process, each with a warm launcher
#                       (`keep-warm`, DIR/pids/warm-<i>.pid; python -m clients.warm_launcher)
#                       in place of Flower's SuperExec: torch is imported once per node and
#                       a ClientApp is forked per message. Needs Flower 1.42.x.
#
# After start, `eval "$(scripts/federation.sh env)"` lets `flwr run . fedhyper-local`,
# `flwr ls fedhyper-local` and `flwr log <run-id> fedhyper-local` reach the SuperLink.
# Logs: DIR/logs/{superlink,supernode-<i>,warm-<i>}.log. ServerApp outputs land in outputs/
# under the repository root (the SuperLink's working directory).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
connection="fedhyper-local"
dir=".federation"
certs=""
num_supernodes=2
port=8000
node_port_base=9094
data_dirs=""
gpus=""
insecure=0
owner=""
warm=0
node=""
ready_timeout_s="${FEDERATION_READY_TIMEOUT_S:-60}"

die() { echo "federation.sh: $*" >&2; exit 1; }
usage() { sed -n '2,39p' "$0" | sed 's/^# \{0,1\}//'; }

command="${1:-}"
case "$command" in
    start | stop | status | env | watch | keep-warm) shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac
while (($#)); do
    case "$1" in
        -n) num_supernodes="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --certs) certs="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --node-port-base) node_port_base="$2"; shift 2 ;;
        --data-dirs) data_dirs="$2"; shift 2 ;;
        --gpus) gpus="$2"; shift 2 ;;
        --insecure) insecure=1; shift ;;
        --owner) owner="$2"; shift 2 ;;
        --warm) warm=1; shift ;;
        --node) node="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done

dir="$(realpath -m "$dir")"
certs="${certs:-$dir/certs}"
if [[ -d "$repo/.venv/bin" ]]; then
    PATH="$repo/.venv/bin:$PATH"
fi
# The SuperLink would otherwise `uv sync` each app's dependencies into a new environment.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
cli_home="$dir/flwr/cli"

is_running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Start a command in a session of its own (detached from this terminal's signals),
# logging to DIR/logs/NAME.log; its PID goes to DIR/pids/NAME.pid.
launch() {
    local name="$1" home="$2"
    shift 2
    mkdir -p "$home"
    (cd "$repo" && FLWR_HOME="$home" exec setsid "$@") >"$dir/logs/$name.log" 2>&1 &
    echo $! >"$dir/pids/$name.pid"
}

write_cli_config() {
    mkdir -p "$cli_home"
    {
        printf '[superlink]\ndefault = "%s"\n\n[superlink.%s]\n' "$connection" "$connection"
        printf 'address = "127.0.0.1:%s"\n' "$port"
        if ((insecure)); then
            printf 'insecure = true\n'
        else
            printf 'root-certificates = "%s"\n' "$certs/ca.crt"
        fi
    } >"$cli_home/config.toml"
}

wait_until() {
    local what="$1" deadline=$((SECONDS + ready_timeout_s))
    shift
    local pid_file
    until "$@" >/dev/null 2>&1; do
        for pid_file in "$dir"/pids/*.pid; do
            is_running "$pid_file" ||
                die "$(basename "$pid_file" .pid) exited; see $dir/logs/$(basename "$pid_file" .pid).log"
        done
        ((SECONDS < deadline)) || die "timed out after ${ready_timeout_s}s waiting for $what; logs in $dir/logs"
        sleep 0.5
    done
}

superlink_healthy() {
    if ((insecure)); then
        curl -sf "http://127.0.0.1:$port/health"
    else
        curl -sf --cacert "$certs/ca.crt" "https://127.0.0.1:$port/health"
    fi
}

online_supernodes() {
    FLWR_HOME="$cli_home" flwr supernode ls "$connection" --format json 2>/dev/null |
        python -c 'import json, sys
nodes = json.load(sys.stdin).get("nodes", [])
print(sum(node["status"] == "online" for node in nodes))'
}

all_supernodes_online() { [[ "$(online_supernodes)" == "$num_supernodes" ]]; }

# Node config of each SuperNode: its own data directory, or its partition of the shared one.
node_configs() {
    local i
    node_config=()
    if [[ -n "$data_dirs" ]]; then
        local -a folders
        IFS=, read -r -a folders <<<"$data_dirs"
        ((${#folders[@]} == num_supernodes)) || die "--data-dirs needs $num_supernodes folders"
        for ((i = 0; i < num_supernodes; i++)); do
            [[ -d "${folders[$i]}" ]] || die "no folder ${folders[$i]}"
            node_config+=("data-dir=\"$(realpath "${folders[$i]}")\"")
        done
    else
        for ((i = 0; i < num_supernodes; i++)); do
            node_config+=("partition-id=$i")
        done
    fi
}

start() {
    [[ "$num_supernodes" =~ ^[1-9][0-9]*$ ]] || die "-n needs a positive number"
    local pid_file
    for pid_file in "$dir"/pids/*.pid; do
        if is_running "$pid_file"; then die "already running ($pid_file); stop it first"; fi
    done
    local -a node_config
    node_configs
    if ((warm)); then
        # Refuses another Flower release in one line, before anything is started.
        (cd "$repo" && python -m clients.warm_launcher --check) || exit 1
    fi
    rm -rf "$dir/pids" "$dir/flwr" "$dir/secrets"
    mkdir -p "$dir/logs" "$dir/pids"
    # A failed start stops whatever it had started.
    trap stop EXIT
    if [[ -n "$owner" ]]; then
        [[ "$owner" =~ ^[1-9][0-9]*$ ]] || die "--owner needs a PID"
        launch owner-watch "$dir/flwr/owner-watch" \
            "$repo/scripts/federation.sh" watch --owner "$owner" --dir "$dir"
    fi

    local -a link_tls node_tls
    if ((insecure)); then
        echo "WARNING: --insecure: no TLS, no SuperNode authentication. Loopback experiments only." >&2
        link_tls=(--insecure)
        node_tls=(--insecure)
    else
        "$repo/scripts/make_certs.sh" -o "$certs" -n "$num_supernodes" >/dev/null
        link_tls=(--ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/superlink.crt"
            --ssl-keyfile "$certs/superlink.key" --enable-supernode-auth)
        node_tls=(--root-certificates "$certs/ca.crt")
    fi

    launch superlink "$dir/flwr/superlink" \
        flower-superlink "${link_tls[@]}" --host 127.0.0.1 --port "$port"
    write_cli_config
    wait_until "the SuperLink on port $port" superlink_healthy

    local i
    for ((i = 0; i < num_supernodes; i++)); do
        local -a auth=()
        if ((!insecure)); then
            FLWR_HOME="$cli_home" flwr supernode register "$certs/supernode-$i.pub" "$connection" \
                >>"$dir/logs/register.log" 2>&1 ||
                die "registering $certs/supernode-$i.pub failed; see $dir/logs/register.log"
            auth=(--auth-supernode-private-key "$certs/supernode-$i")
        fi
        local -a gpu_env=()
        if [[ -n "$gpus" ]]; then
            local -a devices
            IFS=, read -r -a devices <<<"$gpus"
            gpu_env=(env "CUDA_VISIBLE_DEVICES=${devices[$((i % ${#devices[@]}))]}")
        fi
        local -a isolation=()
        if ((warm)); then
            isolation=(--isolation process --superexec-auth-secret-file "$(warm_secret "$i")")
        fi
        launch "supernode-$i" "$dir/flwr/supernode-$i" "${gpu_env[@]}" \
            flower-supernode "${node_tls[@]}" "${auth[@]}" --superlink "127.0.0.1:$port" \
            --port $((node_port_base + i)) --node-config "${node_config[$i]}" "${isolation[@]}"
        if ((warm)); then
            # ClientApps run in the launcher's children: same GPU and FLWR_HOME as the node.
            launch "warm-$i" "$dir/flwr/supernode-$i" "${gpu_env[@]}" "$repo/scripts/federation.sh" \
                keep-warm --node "$i" --dir "$dir" --node-port-base "$node_port_base"
        fi
    done
    wait_until "$num_supernodes SuperNodes online" all_supernodes_online
    if ((warm)); then wait_until "the warm launchers' imports" all_warm_ready; fi
    trap - EXIT
    echo "Federation up: SuperLink 127.0.0.1:$port, $num_supernodes SuperNodes; logs in $dir/logs"
    echo "Next: eval \"\$(scripts/federation.sh env --dir $dir)\"; flwr run . $connection --stream"
}

# The secret SuperNode $1 and its warm launcher share (SuperExec authentication): only
# the launcher may take the node's ClientApp tasks from its Runtime API.
warm_secret() {
    local file="$dir/secrets/supernode-$1.secret"
    if [[ ! -f "$file" ]]; then
        mkdir -p "$dir/secrets"
        (umask 077 && head -c 32 /dev/urandom >"$file")
    fi
    echo "$file"
}

warm_ready_line="warm launcher ready"
all_warm_ready() {
    local i
    for ((i = 0; i < num_supernodes; i++)); do
        grep -q "$warm_ready_line" "$dir/logs/warm-$i.log" 2>/dev/null || return 1
    done
}

# Run SuperNode $node's warm launcher while the SuperNode runs, restarting it whenever it
# exits; exit status 2 means a restart would fail the same way (e.g. another Flower).
keep_warm() {
    [[ "$node" =~ ^[0-9]+$ ]] || die "keep-warm needs --node I"
    local supernode_pid launcher="" status
    supernode_pid="$(cat "$dir/pids/supernode-$node.pid")"
    local -a command=(python -m clients.warm_launcher --parent-pid "$supernode_pid"
        --runtime-api-address "127.0.0.1:$((node_port_base + node))" --insecure
        --superexec-auth-secret-file "$(warm_secret "$node")")
    # The launcher stops its ClientApps on SIGTERM; this loop then ends too.
    trap 'if [[ -n "$launcher" ]]; then kill -TERM "$launcher" 2>/dev/null || true; fi
        wait || true; exit 0' TERM INT
    while process_alive "$supernode_pid"; do
        "${command[@]}" &
        launcher=$!
        status=0
        wait "$launcher" || status=$?
        ((status != 2)) || die "the warm launcher of supernode-$node cannot run; see above"
        process_alive "$supernode_pid" || break
        echo "federation.sh: warm launcher of supernode-$node exited with status $status; restarting in 1 s" >&2
        sleep 1
    done
}

# Every process below PID $1 (SuperExec, ServerApp and ClientApp processes; some run
# in sessions of their own, so a process-group kill would miss them).
descendants() {
    local child
    for child in $(ps -o pid= --ppid "$1"); do
        echo "$child"
        descendants "$child"
    done
}

any_alive() {
    local pid
    for pid; do
        if kill -0 "$pid" 2>/dev/null; then return 0; fi
    done
    return 1
}

stop() {
    local pid_file pid
    local -a pids=() names=()
    # The watcher stops the federation itself: it must not kill the process doing so.
    pid_file="$dir/pids/owner-watch.pid"
    if [[ -f "$pid_file" ]]; then
        pid="$(cat "$pid_file")"
        if [[ "$pid" != "$$" ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
        rm -f "$pid_file"
    fi
    # Warm launchers and SuperNodes first, so that none is left polling a SuperLink that
    # has gone; all are asked at once (each takes seconds to shut down), then killed if
    # still there.
    for pid_file in "$dir"/pids/warm-*.pid "$dir"/pids/supernode-*.pid "$dir/pids/superlink.pid"; do
        [[ -f "$pid_file" ]] || continue
        pid="$(cat "$pid_file")"
        if kill -0 "$pid" 2>/dev/null; then
            mapfile -t -O "${#pids[@]}" pids < <(echo "$pid"; descendants "$pid")
            names+=("$(basename "$pid_file" .pid)")
            kill -TERM "${pids[@]}" 2>/dev/null || true
        fi
        rm -f "$pid_file"
    done
    ((${#pids[@]})) || return 0
    for _ in {1..50}; do
        any_alive "${pids[@]}" || break
        sleep 0.2
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    echo "stopped ${names[*]} (PIDs ${pids[*]})"
}

# Whether process $1 is running (a zombie has exited, though still listed).
process_alive() { [[ "$(ps -o stat= -p "$1" 2>/dev/null)" =~ ^[^Z] ]]; }

watch() {
    [[ "$owner" =~ ^[1-9][0-9]*$ ]] || die "watch needs --owner PID"
    while process_alive "$owner"; do sleep 1; done
    echo "owner $owner exited; stopping the federation"
    stop
}

# For a warm-<i> PID file: its launcher (the supervisor's Python child) and restarts.
warm_details() {
    [[ "$(basename "$1")" == warm-* ]] || return 0
    local launcher restarts
    launcher="$(ps -o pid=,args= --ppid "$(cat "$1")" | awk '/clients.warm_launcher/ {print $1}' || true)"
    restarts="$(grep -c "restarting in" "$dir/logs/$(basename "$1" .pid).log" || true)"
    if [[ -n "$launcher" ]]; then
        echo "; launcher PID $launcher alive; restarted $restarts times"
    else
        echo "; launcher not running (restarting); restarted $restarts times"
    fi
}

status() {
    local pid_file found=0
    for pid_file in "$dir"/pids/*.pid; do
        [[ -f "$pid_file" ]] || continue
        found=1
        if is_running "$pid_file"; then
            echo "$(basename "$pid_file" .pid): running (PID $(cat "$pid_file"))$(warm_details "$pid_file")"
        else
            echo "$(basename "$pid_file" .pid): not running (log: $dir/logs/$(basename "$pid_file" .pid).log)"
        fi
    done
    ((found)) || { echo "no federation in $dir"; return 0; }
    if is_running "$dir/pids/superlink.pid"; then
        FLWR_HOME="$cli_home" flwr supernode ls "$connection"
    fi
}

case "$command" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export FLWR_HOME=\"$cli_home\"" ;;
    watch) watch ;;
    keep-warm) keep_warm ;;
esac
