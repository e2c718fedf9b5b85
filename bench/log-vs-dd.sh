#!/usr/bin/env bash
# strom-log's append next to `dd` of the same volume to the same disk: alternating runs in
# one session, with the machine's memory in the same state for both.
#
# Each run writes DD_MB MiB four times: strom-log with a final flush vs `dd conv=fdatasync`,
# and strom-log with flush.messages=1 vs `dd oflag=dsync`, in alternating order (whoever
# follows a file deletion pays for the `discard` trims it causes), and a pause after each.
# The records are 1000-record batches of 1 KB records (`crates/strom-log/examples/append_rate.rs`).
#
# On a VM, the first write into guest memory that the host does not back yet (or took back
# through free page reporting) costs a host page fault per page, so a page-cache write into
# "cold" memory is several times slower than one into memory the guest already uses. A broker
# in production runs with a full page cache (new writes reuse reclaimed pages), so both sides
# are measured that way: a ballast file fills the page cache first and stays until the end.
#
# Usage: bench/log-vs-dd.sh [runs]   (env: BALLAST_MB, default 3/4 of RAM; DD_MB, default 6144)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
dir=target/strom-log-bench
mkdir -p "$dir"
ram_mb=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
ballast_mb=${BALLAST_MB:-$((ram_mb * 3 / 4))}
mb=${DD_MB:-6144}
cargo build --release -q -p strom-log --example append_rate
rate=target/release/examples/append_rate
echo "machine: $(nproc) cpus, ${ram_mb} MiB RAM, kernel $(uname -r), $(df -h "$dir" | awk 'NR==2 {print $1}') $(findmnt -n -o FSTYPE,OPTIONS -T "$dir")"
echo "ballast: ${ballast_mb} MiB in the page cache; each write: ${mb} MiB"
dd if=/dev/zero of="$dir/ballast" bs=1M count="$ballast_mb" conv=fdatasync status=none
trap 'rm -rf "$dir/ballast" "$dir/ddtest" "$dir/append_rate"' EXIT
settle() { sync; sleep 3; }
dd_rate() { # GB/s of one dd with the given flag
    local out
    out=$(dd if=/dev/zero of="$dir/ddtest" bs=1M count="$mb" "$1" 2>&1 | tail -1)
    rm -f "$dir/ddtest"
    settle
    echo "$out" | awk -F', ' '{print $NF}'
}
strom_rate() { # GB/s of one strom-log append run
    local out
    out=$("$rate" "$dir/append_rate" "$mb" "$@")
    settle
    echo "$out" | awk '{print $6, $7}'
}
for r in $(seq "$runs"); do
    if ((r % 2)); then
        echo "run $r  dd conv=fdatasync: $(dd_rate conv=fdatasync)    strom-log no fsync + final flush: $(strom_rate)"
        echo "run $r  dd oflag=dsync:    $(dd_rate oflag=dsync)    strom-log flush.messages=1:       $(strom_rate fsync)"
    else
        echo "run $r  strom-log no fsync + final flush: $(strom_rate)    dd conv=fdatasync: $(dd_rate conv=fdatasync)"
        echo "run $r  strom-log flush.messages=1:       $(strom_rate fsync)    dd oflag=dsync:    $(dd_rate oflag=dsync)"
    fi
done
