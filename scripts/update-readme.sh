#!/usr/bin/env bash
# Rewrites the README's generated regions (<!-- generated: NAME --> ...
# <!-- end generated -->) from the current code: the same tests that fail
# when the README is stale, run with MOESIM_WRITE_README=1. Wall-clock
# figures (the speed tables) are measurements and are not generated.
# The `readme_` filter picks up every region's test wherever it lives, e.g.
# `replay::readme_calibration_table_is_the_binary_output` (profile-calibration:
# `moesim calibrate` on DeepSeek's profile, which needs ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
MOESIM_WRITE_README=1 cargo test --release --test main -- readme_ every_validation_case what_ifs_move_the_right_way
