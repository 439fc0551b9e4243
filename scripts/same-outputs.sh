#!/usr/bin/env bash
# Checks that two revisions produce the same bytes: builds each (release, in
# a throwaway git worktree), runs every built-in scenario with --out and
# `moesim validate --format json`, and diffs the results. Prints nothing and
# exits 0 when they are identical. Run from the repository root, with
# ../shared beside it (some validation cases read it).
#
#   scripts/same-outputs.sh REV_A REV_B
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 REV_A REV_B" >&2; exit 2; }
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/a" 2>/dev/null; git -C "$root" worktree remove --force "$work/b" 2>/dev/null; rm -rf "$work"' EXIT
snapshot() { # REV NAME
  local tree="$work/$2" out="$work/out-$2"
  git -C "$root" worktree add --detach -q "$tree" "$1"
  ln -s "$root/../shared" "$work/shared" 2>/dev/null || true
  (cd "$tree" && CARGO_TARGET_DIR="$root/target/same-outputs" cargo build --release -q)
  local bin="$root/target/same-outputs/release/moesim"
  cp "$bin" "$work/moesim-$2"
  mkdir -p "$out"
  for s in $("$work/moesim-$2" scenarios | grep -v '^ ' | awk '{print $1}'); do
    (cd "$tree" && "$work/moesim-$2" run "$s" --out "$out/$s" >/dev/null 2>&1) || echo "$s failed" >"$out/$s.failed"
    rm -f "$out/$s/.moesim-output"
  done
  (cd "$tree" && "$work/moesim-$2" validate --format json >"$out/validate.json" 2>/dev/null) || true
}
snapshot "$1" a
snapshot "$2" b
diff -r "$work/out-a" "$work/out-b"
