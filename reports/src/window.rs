//! Which tasks a run's trace (`trace.json.gz`) and timeline (`timeline.csv`)
//! hold: all of them, those that overlap a window of simulated time
//! (`--trace-window START..END`), or by default the earliest
//! [`DEFAULT_MAX_TASKS`] tasks by start time, so the files open on a laptop
//! in seconds. [`EventWindow::describe`] says exactly what was left out.

use moesim_sim::RunResult;

/// Most tasks the trace and timeline hold when no window is given: about
/// 15 MB of trace events before compression and 10 MB of CSV.
pub const DEFAULT_MAX_TASKS: usize = 100_000;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowRequest {
    /// The earliest `DEFAULT_MAX_TASKS` tasks by start time (ties kept
    /// together).
    #[default]
    Default,
    /// Every task.
    All,
    /// Tasks overlapping `[start_ps, end_ps)` (a zero-length task at
    /// `start_ps` included); `end_ps = u64::MAX` for an open end.
    Window { start_ps: u64, end_ps: u64 },
}

/// The tasks chosen, in id order, and the span of simulated time they show.
#[derive(Debug, Clone, PartialEq)]
pub struct EventWindow {
    /// Task ids written, ascending.
    pub tasks: Vec<usize>,
    /// Tasks in the run.
    pub total: usize,
    /// The window shown, ps (link counters are cut to it).
    pub start_ps: u64,
    pub end_ps: u64,
    pub request: WindowRequest,
}

impl EventWindow {
    /// Chooses the tasks of `result` for `request`.
    pub fn choose(result: &RunResult, request: WindowRequest) -> EventWindow {
        let total = result.spans.len();
        let run_end = result.end.as_ps();
        let (tasks, start_ps, end_ps) = match request {
            WindowRequest::All => ((0..total).collect(), 0, run_end),
            WindowRequest::Window { start_ps, end_ps } => {
                let tasks = (0..total)
                    .filter(|&i| {
                        let (a, b) = (result.spans[i].start.as_ps(), result.spans[i].end.as_ps());
                        a < end_ps && (b > start_ps || (a == b && a == start_ps))
                    })
                    .collect();
                (tasks, start_ps, end_ps.min(run_end.max(start_ps)))
            }
            WindowRequest::Default if total <= DEFAULT_MAX_TASKS => ((0..total).collect(), 0, run_end),
            WindowRequest::Default => {
                let mut starts: Vec<u64> = result.spans.iter().map(|s| s.start.as_ps()).collect();
                let (_, cut, _) = starts.select_nth_unstable(DEFAULT_MAX_TASKS);
                let cut = *cut;
                // Every task starting before the first one left out.
                let tasks = (0..total).filter(|&i| result.spans[i].start.as_ps() < cut).collect();
                (tasks, 0, cut)
            }
        };
        EventWindow { tasks, total, start_ps, end_ps, request }
    }

    /// Tasks not written.
    pub fn left_out(&self) -> usize {
        self.total - self.tasks.len()
    }

    /// Whether task `i` is written (ids are sorted).
    pub fn contains(&self, i: usize) -> bool {
        self.tasks.binary_search(&i).is_ok()
    }

    /// One line for the summary, e.g. `trace.json.gz and timeline.csv: the
    /// 100000 tasks that start in 0..1523.4 us, of 940626 in all (840626
    /// left out; --trace-window START..END or all chooses)`.
    pub fn describe(&self) -> String {
        let us = |ps: u64| Time(ps);
        let how = match self.request {
            WindowRequest::All => "every task (--trace-window all)".to_owned(),
            WindowRequest::Window { .. } => format!(
                "the {} tasks that overlap {}..{} (--trace-window)",
                self.tasks.len(),
                us(self.start_ps),
                us(self.end_ps)
            ),
            WindowRequest::Default if self.left_out() == 0 => "every task".to_owned(),
            WindowRequest::Default => format!(
                "the {} tasks that start in {}..{} (the first {} by start time)",
                self.tasks.len(),
                us(self.start_ps),
                us(self.end_ps),
                DEFAULT_MAX_TASKS
            ),
        };
        let mut line = format!("trace.json.gz and timeline.csv: {how}, of {} in all", self.total);
        if self.left_out() > 0 {
            line.push_str(&format!(
                " ({} left out; choose with --trace-window START..END, e.g. 0.5s..0.6s, or --trace-window all)",
                self.left_out()
            ));
        }
        line
    }
}

/// A time shown with a unit that suits it: `2.398 s`, `12.5 ms`, `3.2 us`.
struct Time(u64);

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ps = self.0 as f64;
        if ps >= 1e12 {
            write!(f, "{:.6}s", ps / 1e12)
        } else if ps >= 1e9 {
            write!(f, "{:.6}ms", ps / 1e9)
        } else {
            write!(f, "{:.6}us", ps / 1e6)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moesim_sim::{SimTime, TaskSpan};

    fn result(spans: &[(u64, u64)]) -> RunResult {
        RunResult {
            end: SimTime(spans.iter().map(|s| s.1).max().unwrap_or(0)),
            spans: spans.iter().map(|&(a, b)| TaskSpan { start: SimTime(a), end: SimTime(b) }).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_window_keeps_the_tasks_that_overlap_it() {
        let r = result(&[(0, 10), (5, 20), (20, 30), (30, 30), (40, 50)]);
        let w = EventWindow::choose(&r, WindowRequest::Window { start_ps: 10, end_ps: 30 });
        assert_eq!(w.tasks, vec![1, 2]);
        assert_eq!(w.left_out(), 3);
        let w = EventWindow::choose(&r, WindowRequest::Window { start_ps: 30, end_ps: u64::MAX });
        assert_eq!(w.tasks, vec![3, 4]);
        assert_eq!(w.end_ps, 50);
        assert!(w.describe().contains("3 left out"), "{}", w.describe());
    }

    #[test]
    fn the_default_keeps_the_earliest_tasks() {
        let n = DEFAULT_MAX_TASKS + 5;
        // Task i starts at (n - i): the last ids start first.
        let spans: Vec<(u64, u64)> = (0..n as u64).map(|i| (n as u64 - i, n as u64 - i + 1)).collect();
        let w = EventWindow::choose(&result(&spans), WindowRequest::Default);
        assert_eq!(w.tasks.len(), DEFAULT_MAX_TASKS);
        assert_eq!(w.tasks[0], 5, "the five that start last are left out");
        assert_eq!(w.left_out(), 5);
        assert_eq!(EventWindow::choose(&result(&spans), WindowRequest::All).left_out(), 0);
    }
}
