//! A software pipeline of stages (DMA engines, cube, vector) over steps,
//! simulated step by step: stage `s` starts step `i` when stage `s - 1` has
//! produced step `i`, stage `s` has finished step `i - 1`, and stage `s + 1`
//! has consumed step `i - depth` (the buffer between them has `depth`
//! slots: 2 is double buffering, so a step's loads overlap the previous
//! step's compute; 1 serialises them).

/// The time, seconds, for `steps` steps through stages of the given
/// per-step durations with `depth`-slot buffers between stages.
pub fn pipeline_time(stage_s: &[f64], steps: u64, depth: u32) -> f64 {
    if stage_s.is_empty() || steps == 0 {
        return 0.0;
    }
    let depth = depth.max(1) as usize;
    // Long uniform pipelines reach a steady state after a few steps: run the
    // first `warm` steps exactly, then add the bottleneck per step.
    let warm = (steps as usize).min(4 * stage_s.len() * depth + 8);
    let n = stage_s.len();
    let mut end = vec![vec![0.0f64; warm]; n];
    for i in 0..warm {
        for s in 0..n {
            let mut start = if i > 0 { end[s][i - 1] } else { 0.0 };
            if s > 0 {
                start = start.max(end[s - 1][i]);
            }
            if s + 1 < n && i >= depth {
                start = start.max(end[s + 1][i - depth]);
            }
            end[s][i] = start + stage_s[s];
        }
    }
    let done = end[n - 1][warm - 1];
    let rest = steps as usize - warm;
    if rest == 0 {
        return done;
    }
    // Steady state: one step per bottleneck interval (depth >= 2), or per
    // sum of the stages a single buffer couples (depth 1).
    let per_step = if depth >= 2 {
        stage_s.iter().cloned().fold(0.0, f64::max)
    } else {
        (end[n - 1][warm - 1] - end[n - 1][warm - 2]).max(stage_s.iter().cloned().fold(0.0, f64::max))
    };
    done + rest as f64 * per_step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_buffering_overlaps_loads_with_compute() {
        // load 2, compute 3, store 1 per step, 10 steps.
        let d = [2.0, 3.0, 1.0];
        // Double buffered: fill (2) + 10 x 3 + drain (1).
        assert!((pipeline_time(&d, 10, 2) - 33.0).abs() < 1e-9);
        // Single buffered: load i+1 waits for compute i to free the buffer.
        let single = pipeline_time(&d, 10, 1);
        assert!(single > 33.0 + 10.0, "{single}");
        // One step is the sum of the stages either way.
        assert!((pipeline_time(&d, 1, 2) - 6.0).abs() < 1e-12);
    }

    #[test]
    fn long_pipelines_extrapolate_exactly() {
        let d = [1.0, 4.0, 2.0];
        let t = pipeline_time(&d, 1000, 2);
        assert!((t - (1.0 + 1000.0 * 4.0 + 2.0)).abs() < 1e-6, "{t}");
    }
}
