#!/usr/bin/env bash
# docker-up.sh: make a Docker Engine available for ferry's tests and for
# developers, idempotently, as root on a Debian machine.
#
#   scripts/docker-up.sh                 # the default engine on /var/run/docker.sock
#   scripts/docker-up.sh --second NAME   # also a second, independent engine on
#                                        # /run/ferry-docker-NAME.sock
#
# What it does, skipping every step that is already done:
#   1. installs docker.io and busybox-static with apt-get if missing;
#   2. if no engine answers on /var/run/docker.sock, starts
#      `dockerd --iptables=false --bridge=none --storage-driver=vfs` in the
#      background (log: /var/log/ferry-dockerd.log) and waits for it;
#   3. imports the image ferry-test/busybox:latest, a rootfs made from
#      Debian's static busybox whose entrypoint runs "$STARTUP" with `sh -c`
#      from /home/container, as the Pterodactyl yolks entrypoints do;
#   4. with --second NAME, the same for a second engine with its own socket,
#      data root, exec root and pidfile, so two ferry nodes on one machine do
#      not clash on container names.
# Prints one line per engine: `docker socket: /path`.
set -euo pipefail

IMAGE="ferry-test/busybox:latest"
DEFAULT_SOCK="/var/run/docker.sock"
SECOND=""

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --second)
            [ $# -ge 2 ] || { echo "docker-up: --second needs a NAME" >&2; exit 2; }
            SECOND="$2"
            shift 2
            ;;
        --second=*)
            SECOND="${1#--second=}"
            shift
            ;;
        -h|--help)
            usage
            exit 0
            ;;
        *)
            echo "docker-up: unknown argument: $1 (see --help)" >&2
            exit 2
            ;;
    esac
done

if [ -n "$SECOND" ] && ! [[ "$SECOND" =~ ^[A-Za-z0-9_-]+$ ]]; then
    echo "docker-up: --second NAME must be letters, digits, '-' or '_'" >&2
    exit 2
fi

if [ "$(id -u)" != 0 ]; then
    echo "docker-up: must run as root (it installs packages and starts dockerd)" >&2
    exit 1
fi

log() { echo "docker-up: $*" >&2; }

# --- 1. packages -------------------------------------------------------------

install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" \
        || missing+=(busybox-static)
    [ ${#missing[@]} -eq 0 ] && return 0

    log "installing ${missing[*]}"
    # The package's maintainer scripts would start a dockerd with the stock
    # options (iptables, default bridge); we start our own below instead.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/ferry-docker-apt.log 2>&1; then
        apt-get update -q >>/tmp/ferry-docker-apt.log 2>&1
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/ferry-docker-apt.log 2>&1 || {
            [ "$own_policy" = 1 ] && rm -f "$policy"
            log "apt-get failed; see /tmp/ferry-docker-apt.log"
            tail -20 /tmp/ferry-docker-apt.log >&2
            exit 1
        }
    fi
    [ "$own_policy" = 1 ] && rm -f "$policy"
    return 0
}

# --- 2. engines --------------------------------------------------------------

# True when an engine answers /_ping on the socket.
engine_answers() {
    docker -H "unix://$1" version --format '{{.Server.APIVersion}}' >/dev/null 2>&1
}

# True when PID is a live process (a zombie left by a killed dockerd is not).
alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    [ "$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$1/status" 2>/dev/null)" != Z ]
}

# launch_engine SOCKET DATA_ROOT EXEC_ROOT PIDFILE LOGFILE; sets LAUNCHED.
launch_engine() {
    local sock="$1" data_root="$2" exec_root="$3" pidfile="$4" logfile="$5"
    log "starting dockerd on $sock (log: $logfile)"
    mkdir -p "$(dirname "$sock")" "$data_root" "$exec_root" "$(dirname "$logfile")"
    # Leftovers of a dead engine: its pidfile makes dockerd refuse to start,
    # its socket file makes the listen fail.
    rm -f "$pidfile"
    if [ -S "$sock" ]; then rm -f "$sock"; fi
    nohup dockerd \
        --host "unix://$sock" \
        --data-root "$data_root" \
        --exec-root "$exec_root" \
        --pidfile "$pidfile" \
        --iptables=false \
        --bridge=none \
        --storage-driver=vfs \
        >>"$logfile" 2>&1 </dev/null &
    LAUNCHED=$!
}

# start_engine SOCKET DATA_ROOT EXEC_ROOT PIDFILE LOGFILE
start_engine() {
    local sock="$1" pidfile="$4" logfile="$5"
    if engine_answers "$sock"; then
        return 0
    fi
    # A live dockerd that owns the pidfile is still starting: wait for it.
    local pid="" ours=0 i
    if [ -f "$pidfile" ]; then pid="$(cat "$pidfile" 2>/dev/null || true)"; fi
    if alive "$pid"; then
        log "dockerd $pid ($pidfile) is not answering on $sock yet; waiting for it"
    else
        launch_engine "$@"
        pid="$LAUNCHED" ours=1
    fi
    for i in $(seq 1 120); do
        if engine_answers "$sock"; then
            return 0
        fi
        if ! alive "$pid"; then
            # The engine we were waiting for died: start our own. Ours gets
            # a second try: after a crash, the old engine's containerd can
            # make the first start time out.
            if [ "$ours" -lt 2 ]; then
                launch_engine "$@"
                pid="$LAUNCHED" ours=$((ours + 1))
                continue
            fi
            log "dockerd exited before answering on $sock; last lines of $logfile:"
            tail -30 "$logfile" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
    log "dockerd did not answer on $sock within 60 s; last lines of $logfile:"
    tail -30 "$logfile" >&2 || true
    exit 1
}

# --- 3. the test image -------------------------------------------------------

ENTRYPOINT_SH='#!/bin/sh
# ferry test image: like the Pterodactyl yolks entrypoints, run the server'"'"'s
# STARTUP from /home/container, with {{VAR}} placeholders turned into ${VAR}.
cd /home/container 2>/dev/null || cd /
MODIFIED_STARTUP=$(printf "%s" "$STARTUP" | sed -e "s/{{/\${/g" -e "s/}}/}/g")
printf ":/home/container\$ %s\n" "$MODIFIED_STARTUP"
exec /bin/sh -c "$MODIFIED_STARTUP"
'

image_revision() {
    { printf '%s' "$ENTRYPOINT_SH"; cat /bin/busybox; } | sha256sum | cut -c1-16
}

# import_image SOCKET
import_image() {
    local sock="$1" rev have
    rev="$(image_revision)"
    have="$(docker -H "unix://$sock" image inspect \
        --format '{{index .Config.Labels "ferry.image.revision"}}' "$IMAGE" 2>/dev/null || true)"
    if [ "$have" = "$rev" ]; then
        return 0
    fi
    log "importing $IMAGE into $sock"
    local root
    root="$(mktemp -d /tmp/ferry-busybox-root.XXXXXX)"
    mkdir -p "$root/bin" "$root/usr/bin" "$root/sbin" "$root/etc" "$root/home/container" \
        "$root/tmp" "$root/root" "$root/proc" "$root/sys" "$root/dev"
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    ln -sf /bin/env "$root/usr/bin/env"
    printf 'root:x:0:0:root:/root:/bin/sh\ncontainer:x:999:999::/home/container:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\ncontainer:x:999:\n' >"$root/etc/group"
    printf '%s' "$ENTRYPOINT_SH" >"$root/entrypoint.sh"
    chmod 755 "$root/entrypoint.sh"
    tar -C "$root" --numeric-owner --owner=0 --group=0 -cf - . \
        | docker -H "unix://$sock" import \
            --change 'ENTRYPOINT ["/entrypoint.sh"]' \
            --change 'WORKDIR /home/container' \
            --change 'ENV PATH=/bin:/usr/bin:/sbin' \
            --change "LABEL ferry.image.revision=$rev" \
            - "$IMAGE" >/dev/null
    rm -rf "$root"
}

# --- main --------------------------------------------------------------------

install_packages

start_engine "$DEFAULT_SOCK" /var/lib/docker /var/run/docker /var/run/docker.pid /var/log/ferry-dockerd.log
import_image "$DEFAULT_SOCK"
echo "docker socket: $DEFAULT_SOCK"

if [ -n "$SECOND" ]; then
    sock="/run/ferry-docker-$SECOND.sock"
    start_engine "$sock" "/var/lib/ferry-docker-$SECOND" "/run/ferry-docker-$SECOND" \
        "/run/ferry-docker-$SECOND.pid" "/var/log/ferry-dockerd-$SECOND.log"
    import_image "$sock"
    echo "docker socket: $sock"
fi
