#!/usr/bin/env bash
# moesim side by side with ASTRA-sim on ASTRA-sim's own workloads: writes the
# scenario files of the wall-time table in ../shared/reference/astra-sim.md
# (1-switch direct all-to-all at 512 and 1,024 NPUs, 1-switch ring all-reduce
# at 2,048, the 2-level 8 x N/8 direct all-to-all at 1,024 / 2,048 / 4,096),
# runs the release binary on each under /usr/bin/time -v and prints moesim's
# simulated time, CPU time (user + system), wall time and peak memory next to
# ASTRA-sim's wall time and peak memory from that file; exits 1 when a row's
# CPU time is not below ASTRA-sim's wall time or its peak memory is above ASTRA-sim's.
#
# ASTRA-sim's semantics (its reference file): GB is 2^30 B, latency is per hop
# and a switch path is 2 hops. So every link rate below is in GiB/s written
# as GB/s (400 GiB/s = 429.4967296 GB/s), efficiency 1, and the latency is the
# per-hop figure. The 2-level network is ASTRA's [8, N/8] Switch x Switch:
# 8 NPUs on one switch (400 GiB/s, 936.25 ns) per node, and per local index
# one switch over the N/8 nodes (50 GiB/s, 2,000 ns); a message to another
# node's NPU of another local index crosses the node's switch first, then
# that index's switch. That is moesim's multi-plane fat-tree with one leaf
# per plane (switch_radix = 2 x nodes: no spines; cross-plane traffic over
# NVLink first), with the GPU <-> NIC hop free (PCIe 1,000 GB/s, 0 ns).
#
#   scripts/astra-side-by-side.sh            # all rows
#   ROWS="a2a512 a2a1024" scripts/astra-side-by-side.sh
#   WRITE_ONLY=1 OUT_DIR=DIR scripts/astra-side-by-side.sh   # only the scenario files (default target/astra-scenarios)
#
# Run from the repository root after `cargo build --release`; the 4,096-NPU
# row needs about 1.3 GiB. Wall times on a shared machine vary: compare CPU
# time, and say the load.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
bin="${MOESIM:-$root/target/release/moesim}"
ref="${ASTRA_REFERENCE:-$root/../shared/reference/astra-sim.md}"
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 2; }
[ -f "$ref" ] || { echo "no $ref (ASTRA-sim's figures)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ASTRA's GiB/s as GB/s.
gib() { awk -v x="$1" 'BEGIN { printf "%.7f", x * 1.073741824 }'; }

one_switch() { # NAME NPUS OP ALGORITHM
  cat >"$work/$1.toml" <<EOF
# ASTRA-sim's 1-D Switch: $2 NPUs, 400 GiB/s, 936.25 ns per hop; 1 MiB.
name = "astra-$1"
seed = 1

[hardware]
device = "h100"

[topology]
preset = "h800-node"
gpus_per_node = $2
nvlink_gb_per_s = $(gib 400)
nvlink_efficiency = 1.0
nccl_nvlink_efficiency = 1.0        # ASTRA-sim's links are ideal for every kernel
nvlink_latency_ns = 936.25

[workload]
kind = "collective"
op = "$3"
ranks = $2
bytes = 1048576
algorithm = "$4"
protocol = "simple"                 # ASTRA-sim's collectives move data at the link rate (no LL flags)
EOF
}

two_level() { # NAME NPUS
  local nodes=$(($2 / 8))
  cat >"$work/$1.toml" <<EOF
# ASTRA-sim's 2-D Switch x Switch [8, $nodes]: 400 / 50 GiB/s, 936.25 / 2,000 ns per hop; 1 MiB direct all-to-all.
name = "astra-$1"
seed = 1

[hardware]
device = "h100"

[topology]
preset = "multi-plane-fat-tree"
nodes = $nodes
switch_radix = $((2 * nodes))
nvlink_gb_per_s = $(gib 400)
nvlink_efficiency = 1.0
nccl_nvlink_efficiency = 1.0        # ASTRA-sim's links are ideal for every kernel
nvlink_latency_ns = 936.25
pcie_gb_per_s = 1000.0
pcie_latency_ns = 0.0
ib_gbit_per_s = $(awk -v x="$(gib 50)" 'BEGIN { printf "%.7f", 8 * x }')
ib_efficiency = 1.0
ib_latency_ns = 2000.0

[workload]
kind = "collective"
op = "all-to-all"
ranks = $2
bytes = 1048576
algorithm = "direct"
EOF
}

# row key | scenario writer | the row's first cell in the reference's wall-time table
rows_all="a2a512 a2a1024 ring2048 l2a2a1024 l2a2a2048 l2a2a4096"
one_switch a2a512 512 all-to-all direct
one_switch a2a1024 1024 all-to-all direct
one_switch ring2048 2048 all-reduce ring
two_level l2a2a1024 1024
two_level l2a2a2048 2048
two_level l2a2a4096 4096
label() {
  case $1 in
    a2a512) echo "1 Switch a2a 1 MiB, 512 NPUs" ;;
    a2a1024) echo "same, 1,024 NPUs" ;;
    ring2048) echo "1 Switch ring all-reduce 1 MiB, 2,048 NPUs" ;;
    l2a2a1024) echo "2-level a2a 1 MiB, 1,024 NPUs" ;;
    l2a2a2048) echo "2-level a2a 1 MiB, 2,048 NPUs" ;;
    l2a2a4096) echo "2-level a2a 1 MiB, 4,096 NPUs" ;;
  esac
}
describe() {
  case $1 in
    a2a512) echo "1 switch, direct all-to-all 1 MiB, 512 NPUs" ;;
    a2a1024) echo "1 switch, direct all-to-all 1 MiB, 1,024 NPUs" ;;
    ring2048) echo "1 switch, ring all-reduce 1 MiB, 2,048 NPUs" ;;
    l2a2a1024) echo "2-level 8 x 128, direct all-to-all 1 MiB, 1,024 NPUs" ;;
    l2a2a2048) echo "2-level 8 x 256, direct all-to-all 1 MiB, 2,048 NPUs" ;;
    l2a2a4096) echo "2-level 8 x 512, direct all-to-all 1 MiB, 4,096 NPUs" ;;
  esac
}
# ASTRA's wall s and MiB: columns 4 and 7 of its row (| case | backend | wall | moesim | ratio | MiB | MiB |).
row() { # KEY: the row of the reference's wall-time table
  local l
  l=$(label "$1")
  sed -n '/^## Wall time/,/^## /p' "$ref" | grep -F "| $l |" | head -1
}
astra() { # KEY COLUMN
  row "$1" | awk -F'|' -v c="$2" '{ gsub(/[ ,*]/, "", $c); print $c }'
}

# ASTRA's simulated time in µs, same semantics as moesim's run (one chunk,
# the "eq" columns: CA for one switch, CU for the 2-level network), from the
# reference's simulated-time table; "-" where it has none.
astra_sim_us() { # KEY
  local l c
  case $1 in
    a2a512) l="same, 512 NPUs" c=4 ;;
    a2a1024) l="same, 1,024 NPUs" c=4 ;;
    ring2048) l="same, 2,048 NPUs" c=4 ;;
    l2a2a4096) l="2-level 8 × N/8" c=5 ;;
    *) echo "-"; return ;;
  esac
  sed -n '/^## Simulated time/,/^## /p' "$ref" | grep -F "| $l" | head -1 |
    awk -F'|' -v c="$c" '{ split($c, w, " "); gsub(/,/, "", w[1]); if (w[1] + 0 > 0) printf "%.3f", w[1] / 1000; else print "-" }'
}

if [ "${WRITE_ONLY:-0}" = 1 ]; then
  out="${OUT_DIR:-$root/target/astra-scenarios}"
  mkdir -p "$out"
  cp "$work"/*.toml "$out/"
  echo "scenario files in $out"
  exit 0
fi

printf '| case | ASTRA-sim | ASTRA wall s | ASTRA MiB | ASTRA simulated µs (1 chunk) | moesim simulated µs | moesim CPU s | moesim wall s | moesim MiB | ASTRA wall / moesim CPU | faster, no more memory |\n'
printf '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n'
failed=0
for key in ${ROWS:-$rows_all}; do
  /usr/bin/time -v "$bin" run "$work/$key.toml" --format json >"$work/$key.json" 2>"$work/$key.time"
  sim_us=$(grep -o '"time_us":[0-9.e+-]*' "$work/$key.json" | head -1 | cut -d: -f2)
  user=$(awk -F': ' '/User time/ { print $2 }' "$work/$key.time")
  sys=$(awk -F': ' '/System time/ { print $2 }' "$work/$key.time")
  wall=$(awk '/Elapsed \(wall clock\)/ { n = split($NF, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$work/$key.time")
  rss_kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/$key.time")
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
  mib=$(awk -v k="$rss_kb" 'BEGIN { printf "%.0f", k / 1024 }')
  a_wall=$(astra "$key" 4)
  a_kind=$(row "$key" | awk -F'|' '{ gsub(/^ +| +$/, "", $3); print $3 }')
  a_mib=$(astra "$key" 7)
  ratio=$(awk -v a="$a_wall" -v m="$cpu" 'BEGIN { if (m > 0) printf "%.1f×", a / m; else print "-" }')
  ok=$(awk -v a="$a_wall" -v m="$cpu" -v am="$a_mib" -v mm="$mib" 'BEGIN { print (m < a && mm <= am) ? "yes" : "no" }')
  [ "$ok" = yes ] || failed=1
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(describe "$key")" "$a_kind" "$a_wall" "$a_mib" "$(astra_sim_us "$key")" \
    "$(awk -v x="$sim_us" 'BEGIN { printf "%.3f", x }')" "$cpu" "$wall" "$mib" "$ratio" "$ok"
done
# Exit 1 when moesim is not faster (CPU time against ASTRA's wall time) or uses more memory on a row.
exit "$failed"
