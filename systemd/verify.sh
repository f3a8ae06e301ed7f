#!/usr/bin/env bash
# Check the units: `systemd-analyze verify` must print nothing, and the offline security review
# (`systemd-analyze security --offline=true`) must not score worse than each one's maximum:
#   - systemd/focus-watcher.service, the daemon (local executor);
#   - the same with systemd/focus-watcher.service.d/dask.conf, the drop-in for the Dask executor (network);
#   - systemd/focus-watcher-worker.service, a Dask worker.
#
# Usage: systemd/verify.sh [PATH-TO-focus-watcher]
#
# verify insists that ExecStart's program exists (it does not check that User= exists), so each unit is checked
# as a copy in a temp dir whose ExecStart points at an installed program: for the daemon the argument, else the
# focus-watcher on PATH, else the repo's .venv/bin/focus-watcher (`uv sync` creates it); for the worker the
# `dask` beside that focus-watcher. Every other line is checked as is.
set -euo pipefail

# The best honest score of the daemon's unit is 0.5 "SAFE" (systemd 252), and that is the limit: any loosening
# fails. The score is rounded to 0.1 and hides single small items (dropping MemoryDenyWriteExecute= leaves it at
# 0.5), so every remaining exposure must also be on the unit's list, with at most the weight shown. Each is
# deliberate (see the comments in the units).
MAX_EXPOSURE=0.5
ALLOWED_EXPOSURES="
RootDirectory=/RootImage= 0.1
SupplementaryGroups= 0.1
RestrictAddressFamilies=~AF_UNIX 0.1
ProtectHome= 0.1
ProcSubset= 0.1
PrivateUsers= 0.2
DeviceAllow= 0.1
UMask= 0.1
"
# A cluster needs the network: TCP sockets, the host's network, an IP allow list (private ranges only).
NETWORK_EXPOSURES="
RestrictAddressFamilies=~AF_(INET|INET6) 0.3
PrivateNetwork= 0.5
IPAddressDeny= 0.1
"
DASK_MAX_EXPOSURE=1.3
DASK_ALLOWED_EXPOSURES="$ALLOWED_EXPOSURES$NETWORK_EXPOSURES"
# The worker: the daemon's sandbox plus the network, without supplementary groups or a group-readable umask.
WORKER_MAX_EXPOSURE=1.2
WORKER_ALLOWED_EXPOSURES="
RootDirectory=/RootImage= 0.1
RestrictAddressFamilies=~AF_UNIX 0.1
ProtectHome= 0.1
ProcSubset= 0.1
PrivateUsers= 0.2
DeviceAllow= 0.1
$NETWORK_EXPOSURES"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
installed_exec="/opt/focus-watcher/venv/bin/focus-watcher"
installed_dask="/opt/focus-watcher/venv/bin/dask"

die() {
    echo "verify.sh: $*" >&2
    exit 1
}

# --- systemd-analyze (Debian's "systemd" package; CI runs as root on Debian) ---
if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== systemd-analyze missing: installing Debian's systemd package"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends systemd >/dev/null
    fi
    command -v systemd-analyze >/dev/null 2>&1 ||
        die "systemd-analyze not found: install the 'systemd' package (apt-get install systemd) or run as root on Debian"
fi
systemd_version="$(systemd-analyze --version | awk 'NR == 1 { print $2 }')"
case "$systemd_version" in
    '' | *[!0-9]*) die "cannot read the systemd version from 'systemd-analyze --version'" ;;
esac
[ "$systemd_version" -ge 252 ] ||
    die "systemd $systemd_version is too old: 'systemd-analyze security --offline=true' needs systemd >= 252"

# --- the focus-watcher program that ExecStart will name ---
exec_path="${1:-}"
if [ -z "$exec_path" ]; then
    exec_path="$(command -v focus-watcher 2>/dev/null || true)"
fi
if [ -z "$exec_path" ] && [ -x "$repo/.venv/bin/focus-watcher" ]; then
    exec_path="$repo/.venv/bin/focus-watcher"
fi
[ -n "$exec_path" ] || die "no focus-watcher found: pass its path, or run 'uv sync' in $repo first"
[ -f "$exec_path" ] && [ -x "$exec_path" ] || die "$exec_path is not an executable file"
case "$exec_path" in
    /*) ;;
    *) exec_path="$(cd "$(dirname "$exec_path")" && pwd)/$(basename "$exec_path")" ;;  # ExecStart needs absolute
esac
case "$exec_path" in
    *[[:space:]\\\"\'%\$]*) die "path has characters that systemd would interpret in ExecStart=: $exec_path" ;;
esac

dask_path="$(dirname "$exec_path")/dask"
[ -x "$dask_path" ] || die "no $dask_path beside $exec_path: install focus-watcher[dask] there (uv sync does)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# check UNIT INSTALLED-PROGRAM LOCAL-PROGRAM MAX-EXPOSURE ALLOWED-EXPOSURES [DROP-IN]
check() {
    local unit_name="$1" installed="$2" program="$3" max_exposure="$4" allowed="$5" dropin="${6:-}"
    local unit="$here/$unit_name" dir="$tmp/$unit_name${dropin:+-$(basename "$dropin")}"
    local label="$unit_name${dropin:+ + ${dropin#"$here/"}}"
    mkdir -p "$dir"
    # --- the copy: identical except for the program path on the ExecStart= line ---
    local copy="$dir/$unit_name" replaced=0 line
    while IFS= read -r line || [ -n "$line" ]; do
        if [[ "$line" == "ExecStart=$installed "* || "$line" == "ExecStart=$installed" ]]; then
            line="ExecStart=$program${line#"ExecStart=$installed"}"
            replaced=$((replaced + 1))
        fi
        printf '%s\n' "$line"
    done <"$unit" >"$copy"
    [ "$replaced" -eq 1 ] || die "expected exactly one 'ExecStart=$installed' line in $unit, found $replaced"
    local changed
    changed="$(diff "$unit" "$copy" | grep -c '^[<>]' || true)"
    [ "$changed" -eq 2 ] || die "the test copy differs from $unit in more than the ExecStart= line"
    if [ -n "$dropin" ]; then  # beside the copy, where systemd-analyze looks for its drop-ins
        mkdir -p "$copy.d"
        cp "$dropin" "$copy.d/"
    fi

    # --- systemd-analyze verify: any output is a failure ---
    echo "== systemd-analyze verify $label (systemd $systemd_version, ExecStart -> $program)"
    local status=0 verify_output
    verify_output="$(systemd-analyze verify "$copy" 2>&1)" || status=$?
    if [ "$status" -ne 0 ] || [ -n "$verify_output" ]; then
        printf '%s\n' "${verify_output//$dir\//}" >&2
        die "systemd-analyze verify reported problems in $label (exit status $status)"
    fi
    echo "ok: no warnings"

    # --- systemd-analyze security --offline=true: print, then check every exposure and the overall score ---
    echo "== systemd-analyze security --offline=true $label"
    status=0
    local security_output
    # The C locale makes the report ASCII ("-" marks an exposure), the same on every machine.
    security_output="$(LC_ALL=C systemd-analyze security --offline=true "$copy" 2>&1)" || status=$?
    printf '%s\n' "$security_output"
    [ "$status" -eq 0 ] || die "systemd-analyze security failed for $label (exit status $status)"
    local unexpected
    unexpected="$(printf '%s\n' "$security_output" | awk -v allowed="$allowed" '
        BEGIN {
            n = split(allowed, lines, "\n")
            for (i = 1; i <= n; i++) if (split(lines[i], f, " ") == 2) max[f[1]] = f[2]
        }
        $1 == "-" {
            name = $2; weight = $NF
            if (!(name in max) || weight + 0 > max[name] + 0) print "  " name " " weight
        }')"
    [ -z "$unexpected" ] ||
        die "exposures of $label not allowed by its list in $(basename "$0") (fix the unit, or justify and list them):
$unexpected"
    local score
    score="$(printf '%s\n' "$security_output" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p' | tail -n 1)"
    [ -n "$score" ] || die "no 'Overall exposure level' line in the security report of $label"
    if awk -v score="$score" -v max="$max_exposure" 'BEGIN { exit !(score + 0 > max + 0) }'; then
        die "exposure level $score of $label is worse than the allowed $max_exposure"
    fi
    echo "ok: $label exposure level $score (allowed: <= $max_exposure), no exposure beyond the allowed list"
}

check focus-watcher.service "$installed_exec" "$exec_path" "$MAX_EXPOSURE" "$ALLOWED_EXPOSURES"
check focus-watcher.service "$installed_exec" "$exec_path" "$DASK_MAX_EXPOSURE" "$DASK_ALLOWED_EXPOSURES" \
    "$here/focus-watcher.service.d/dask.conf"
check focus-watcher-worker.service "$installed_dask" "$dask_path" "$WORKER_MAX_EXPOSURE" "$WORKER_ALLOWED_EXPOSURES"
