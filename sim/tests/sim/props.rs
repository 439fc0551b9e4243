//! Property tests of the flow solver (driven step by step, checking every
//! allocation) and of whole runs over random small networks.

use moesim_sim::flow::{FlowDue, FlowSolver};
use moesim_sim::*;
use proptest::prelude::*;

const B_PER_PS: f64 = 1e12;

#[derive(Debug, Clone)]
struct Net {
    /// Capacities in bytes per picosecond.
    caps: Vec<f64>,
    latencies: Vec<u64>,
    /// (path, bytes, start time in ps)
    flows: Vec<(Vec<u32>, f64, u64)>,
}

fn net() -> impl Strategy<Value = Net> {
    (2usize..7)
        .prop_flat_map(|links| {
            // Equal bytes and start times are common, so flows share runs
            // (one state for flows given the same rate at the same time).
            let flow = (
                proptest::sample::subsequence((0..links as u32).collect::<Vec<_>>(), 1..=links.min(4)),
                prop_oneof![Just(1000.0f64), Just(2500.0), 1.0f64..5000.0],
                prop_oneof![Just(0u64), Just(1500), 0u64..4000],
            );
            (
                proptest::collection::vec(prop_oneof![Just(1.0f64), 0.25f64..8.0], links),
                proptest::collection::vec(0u64..300, links),
                proptest::collection::vec(flow, 1..24),
            )
        })
        .prop_map(|(caps, latencies, flows)| Net { caps, latencies, flows })
}

fn platform(n: &Net) -> Platform {
    let mut p = Platform::default();
    for (c, l) in n.caps.iter().zip(&n.latencies) {
        p.add_link(LinkResource {
            name: "l".into(),
            kind: LinkKind::Physical("test"),
            bytes_per_s: c * B_PER_PS,
            latency: SimDuration(*l),
        });
    }
    p
}

/// Checks capacity and max-min optimality of the current allocation.
fn check_allocation(n: &Net, paths: &[Vec<LinkId>], solver: &FlowSolver) -> Result<(), TestCaseError> {
    let nl = n.caps.len();
    let mut load = vec![0.0; nl];
    let mut max_rate = vec![0.0f64; nl];
    for (f, p) in paths.iter().enumerate() {
        if !solver.is_active(f as u32) {
            continue;
        }
        let r = solver.rate_bytes_per_s(f as u32) / B_PER_PS;
        prop_assert!(r > 0.0, "active flow {f} has no rate");
        for l in p {
            load[l.0 as usize] += r;
            max_rate[l.0 as usize] = max_rate[l.0 as usize].max(r);
        }
    }
    for (l, (&load, &cap)) in load.iter().zip(&n.caps).enumerate() {
        prop_assert!(load <= cap * (1.0 + 1e-9), "link {l} over capacity: {load} > {cap}");
        let reported = solver.link_rate_bytes_per_s(LinkId(l as u32)) / B_PER_PS;
        prop_assert!((reported - load).abs() <= 1e-9 * cap, "link {l} reports {reported}, carries {load}");
    }
    for (f, p) in paths.iter().enumerate() {
        if !solver.is_active(f as u32) {
            continue;
        }
        let r = solver.rate_bytes_per_s(f as u32) / B_PER_PS;
        let bottlenecked = p.iter().any(|l| {
            let l = l.0 as usize;
            load[l] >= n.caps[l] * (1.0 - 1e-9) && r >= max_rate[l] * (1.0 - 1e-9)
        });
        prop_assert!(bottlenecked, "flow {f} at {r} has no saturated link where it is among the largest");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Drives the solver through starts and completions and checks every
    /// allocation: no link over capacity, every flow bottlenecked (max-min).
    #[test]
    fn solver_allocations_are_feasible_and_max_min(n in net()) {
        let p = platform(&n);
        let paths: Vec<Vec<LinkId>> = n.flows.iter().map(|(path, _, _)| path.iter().map(|&l| LinkId(l)).collect()).collect();
        let mut solver = FlowSolver::new(&p, paths.len(), false);
        let mut starts: Vec<(u64, u32)> = n.flows.iter().enumerate().map(|(i, f)| (f.2, i as u32)).collect();
        starts.sort();
        let mut next_start = 0;
        let mut pending: Vec<FlowDue> = Vec::new();
        let mut finished = 0;
        let mut steps = 0;
        while finished < paths.len() {
            steps += 1;
            prop_assert!(steps < 10_000, "livelock");
            let t_start = starts.get(next_start).map(|s| s.0).unwrap_or(u64::MAX);
            let t_due = pending.iter().map(|d| d.time).min().unwrap_or(u64::MAX);
            let now = t_start.min(t_due);
            prop_assert!(now != u64::MAX, "nothing left to do with {finished} finished");
            while next_start < starts.len() && starts[next_start].0 == now {
                let f = starts[next_start].1;
                solver.start_flow(&paths, f, n.flows[f as usize].1);
                next_start += 1;
            }
            let due_now: Vec<FlowDue> = pending.iter().copied().filter(|d| d.time == now).collect();
            pending.retain(|d| d.time != now);
            let mut done = Vec::new();
            for d in due_now {
                solver.complete_due(&paths, d, now, &mut done);
            }
            finished += done.len();
            solver.recompute(&paths, now, &mut pending);
            check_allocation(&n, &paths, &solver)?;
        }
    }

    /// Whole runs: link bytes are the bytes of the flows crossing them, no
    /// recorded link rate exceeds capacity, and completion times do not depend
    /// on the order in which flows were added.
    #[test]
    fn runs_conserve_bytes_and_ignore_flow_order(n in net(), seed in any::<u64>()) {
        let p = platform(&n);
        let mut order: Vec<usize> = (0..n.flows.len()).collect();
        let base = run_in_order(&n, &p, &order)?;
        // A deterministic shuffle from the seed.
        let mut s = seed | 1;
        for i in (1..order.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            order.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let shuffled = run_in_order(&n, &p, &order)?;
        for (i, (a, b)) in base.iter().zip(&shuffled).enumerate() {
            prop_assert!(a.abs_diff(*b) <= 1, "flow {i} ends at {a} in one order and {b} in another");
        }
    }
}

/// Runs each flow as its own comm task (after a delay to its start time),
/// adding them in `order`; returns each flow's end time, by flow index.
fn run_in_order(n: &Net, p: &Platform, order: &[usize]) -> Result<Vec<u64>, TestCaseError> {
    let mut g = TaskGraph::new();
    let mut tasks = vec![TaskId(0); n.flows.len()];
    for &i in order {
        let (path, bytes, start) = &n.flows[i];
        let links: Vec<LinkId> = path.iter().map(|&l| LinkId(l)).collect();
        let pid = g.add_path(&links);
        let s = g.add_stream(i as u32, "s");
        g.add_delay(s, "wait", SimDuration(*start));
        tasks[i] = g.add_comm(s, "flow", [Flow { path: pid, bytes: *bytes }], None);
    }
    let r = run(p, &g, &EngineOptions { record_link_series: true, ..EngineOptions::default() }, &mut Quiet)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for (l, cap) in n.caps.iter().enumerate() {
        let want: f64 = n.flows.iter().filter(|f| f.0.contains(&(l as u32))).map(|f| f.1).sum();
        prop_assert!(
            (r.links[l].bytes - want).abs() <= 1e-9 * want.max(1.0),
            "link {l}: {} vs {want}",
            r.links[l].bytes
        );
        for s in &r.link_series[l] {
            prop_assert!(s.bytes_per_s <= cap * B_PER_PS * (1.0 + 1e-9), "link {l} at {} B/s", s.bytes_per_s);
        }
        prop_assert!(r.links[l].peak_bytes_per_s <= cap * B_PER_PS * (1.0 + 1e-9));
        // Reports count the links that carried traffic by `busy_ps` (the
        // constructs have no series): the same links as those with a series.
        prop_assert_eq!(r.link_series[l].is_empty(), r.links[l].busy_ps == 0, "link {}", l);
    }
    // Each flow's end is at least its start + bytes / capacity of its path + latency.
    for (i, (path, bytes, start)) in n.flows.iter().enumerate() {
        let span = r.spans[tasks[i].0 as usize];
        let lat: u64 = path.iter().map(|&l| n.latencies[l as usize]).sum();
        let cap = path.iter().map(|&l| n.caps[l as usize]).fold(f64::INFINITY, f64::min);
        prop_assert_eq!(span.start.0, *start);
        prop_assert!(span.end.0 + 1 >= start + lat + (bytes / cap) as u64, "flow {} too fast", i);
    }
    Ok(tasks.iter().map(|t| r.spans[t.0 as usize].end.0).collect())
}

/// Drives a solver over `n`'s flows step by step (starts at their times,
/// completions as they fall due, one recompute per timestamp) and calls
/// `check(now, solver)` after every recompute; the solver when all finished.
fn step_through<P: moesim_sim::flow::FlowPaths>(
    n: &Net,
    p: &Platform,
    paths: &P,
    mut check: impl FnMut(u64, &FlowSolver) -> Result<(), TestCaseError>,
) -> Result<FlowSolver, TestCaseError> {
    let count = n.flows.len();
    let mut solver = FlowSolver::new(p, count, false);
    let mut starts: Vec<(u64, u32)> = n.flows.iter().enumerate().map(|(i, f)| (f.2, i as u32)).collect();
    starts.sort();
    let (mut next_start, mut finished, mut steps) = (0, 0, 0);
    let mut pending: Vec<FlowDue> = Vec::new();
    while finished < count {
        steps += 1;
        prop_assert!(steps < 100_000, "livelock");
        let t_start = starts.get(next_start).map(|s| s.0).unwrap_or(u64::MAX);
        let now = t_start.min(pending.iter().map(|d| d.time).min().unwrap_or(u64::MAX));
        prop_assert!(now != u64::MAX, "nothing left to do with {finished} finished");
        while next_start < starts.len() && starts[next_start].0 == now {
            let f = starts[next_start].1;
            solver.start_flow(paths, f, n.flows[f as usize].1);
            next_start += 1;
        }
        let due_now: Vec<FlowDue> = pending.iter().copied().filter(|d| d.time == now).collect();
        pending.retain(|d| d.time != now);
        let mut done = Vec::new();
        for d in due_now {
            solver.complete_due(paths, d, now, &mut done);
        }
        finished += done.len();
        solver.recompute(paths, now, &mut pending);
        check(now, &solver)?;
    }
    Ok(solver)
}

/// The exact max-min allocation of the active flows, by the textbook
/// progressive filling (every level scans every link and flow; no
/// components, runs, incidence or partial re-filling): the reference the
/// solver's rates are compared with.
fn reference_rates(caps: &[f64], paths: &[Vec<LinkId>], active: &[bool]) -> Vec<f64> {
    let mut rate = vec![0.0; paths.len()];
    let mut frozen: Vec<bool> = active.iter().map(|a| !a).collect();
    let mut left = caps.to_vec();
    loop {
        let mut count = vec![0u32; caps.len()];
        for (f, p) in paths.iter().enumerate() {
            if !frozen[f] {
                for l in p {
                    count[l.0 as usize] += 1;
                }
            }
        }
        let Some(s) =
            (0..caps.len()).filter(|&l| count[l] > 0).map(|l| left[l].max(0.0) / count[l] as f64).reduce(f64::min)
        else {
            return rate;
        };
        let saturated: Vec<bool> =
            (0..caps.len()).map(|l| count[l] > 0 && left[l].max(0.0) / count[l] as f64 <= s * (1.0 + 1e-9)).collect();
        for (f, p) in paths.iter().enumerate() {
            if !frozen[f] && p.iter().any(|l| saturated[l.0 as usize]) {
                frozen[f] = true;
                rate[f] = s;
                for l in p {
                    left[l.0 as usize] -= s;
                }
            }
        }
    }
}

/// Larger random networks than [`net`]: up to 400 flows over up to 40
/// links, so a water-filling takes many levels and its sequential passes
/// (over the flows still unfrozen) happen after earlier levels froze flows
/// through the incidence.
fn big_net() -> impl Strategy<Value = Net> {
    (4usize..40)
        .prop_flat_map(|links| {
            let flow = (
                proptest::sample::subsequence((0..links as u32).collect::<Vec<_>>(), 1..=links.min(5)),
                prop_oneof![Just(1000.0f64), Just(2500.0), 1.0f64..5000.0],
                prop_oneof![Just(0u64), Just(1500), 0u64..4000],
            );
            (
                proptest::collection::vec(prop_oneof![Just(1.0f64), Just(4.0), 0.25f64..8.0], links),
                proptest::collection::vec(0u64..300, links),
                proptest::collection::vec(flow, 50..400),
            )
        })
        .prop_map(|(caps, latencies, flows)| Net { caps, latencies, flows })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// After every start and completion, each active flow's rate equals the
    /// textbook max-min allocation's (relative 1e-9), so simulated times are
    /// those of the exact solution.
    #[test]
    fn solver_rates_equal_the_textbook_max_min(n in big_net()) {
        let p = platform(&n);
        let paths: Vec<Vec<LinkId>> = n.flows.iter().map(|(path, _, _)| path.iter().map(|&l| LinkId(l)).collect()).collect();
        let solver = step_through(&n, &p, &paths, |now, solver| {
            let active: Vec<bool> = (0..paths.len() as u32).map(|f| solver.is_active(f)).collect();
            let want = reference_rates(&n.caps, &paths, &active);
            for (f, &w) in want.iter().enumerate() {
                let got = solver.rate_bytes_per_s(f as u32) / B_PER_PS;
                prop_assert!((got - w).abs() <= 1e-9 * w.max(1e-12), "flow {f} at {now} ps: {got} vs {w}");
            }
            Ok(())
        })?;
        prop_assert_eq!(solver.flows_started(), paths.len() as u64);
        prop_assert!(solver.flows_rerated() >= paths.len() as u64);
    }
}

/// Paths with a weight per flow: flow f stands for `weights[f]` members.
struct WeightedPaths {
    paths: Vec<Vec<LinkId>>,
    weights: Vec<u32>,
}

impl moesim_sim::flow::FlowPaths for WeightedPaths {
    fn flow_path(&self, flow: u32) -> &[LinkId] {
        &self.paths[flow as usize]
    }
    fn flow_weight(&self, flow: u32) -> u32 {
        self.weights[flow as usize]
    }
    fn has_weights(&self) -> bool {
        true
    }
}

/// [`reference_rates`] with weights: each flow as `weights[f]` members.
fn reference_rates_weighted(caps: &[f64], paths: &[Vec<LinkId>], weights: &[u32], active: &[bool]) -> Vec<f64> {
    let mut members = Vec::new();
    let mut owner = Vec::new();
    let mut member_active = Vec::new();
    for (f, p) in paths.iter().enumerate() {
        for _ in 0..weights[f] {
            members.push(p.clone());
            owner.push(f);
            member_active.push(active[f]);
        }
    }
    let member_rates = reference_rates(caps, &members, &member_active);
    let mut rate = vec![0.0; paths.len()];
    for (m, &f) in owner.iter().enumerate() {
        rate[f] = member_rates[m];
    }
    rate
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Weighted flows: after every start and completion each active flow's
    /// rate equals the textbook max-min rate of its members (each weighted
    /// flow expanded into that many flows), relative 1e-9.
    #[test]
    fn weighted_rates_equal_the_textbook_max_min_of_the_members(
        n in big_net(),
        weights in proptest::collection::vec(prop_oneof![Just(1u32), 1u32..6], 400),
    ) {
        let p = platform(&n);
        let wp = WeightedPaths {
            paths: n.flows.iter().map(|(path, _, _)| path.iter().map(|&l| LinkId(l)).collect()).collect(),
            weights: weights[..n.flows.len()].to_vec(),
        };
        step_through(&n, &p, &wp, |now, solver| {
            let active: Vec<bool> = (0..wp.paths.len() as u32).map(|f| solver.is_active(f)).collect();
            let want = reference_rates_weighted(&n.caps, &wp.paths, &wp.weights, &active);
            for (f, &w) in want.iter().enumerate() {
                let got = solver.rate_bytes_per_s(f as u32) / B_PER_PS;
                prop_assert!((got - w).abs() <= 1e-9 * w.max(1e-12), "flow {f} at {now} ps: {got} vs {w}");
            }
            // Link loads count every member.
            for l in 0..n.caps.len() {
                let load: f64 = (0..wp.paths.len())
                    .filter(|&f| active[f] && wp.paths[f].contains(&LinkId(l as u32)))
                    .map(|f| want[f] * f64::from(wp.weights[f]))
                    .sum();
                let reported = solver.link_rate_bytes_per_s(LinkId(l as u32)) / B_PER_PS;
                prop_assert!((reported - load).abs() <= 1e-9 * n.caps[l], "link {l}: {reported} vs {load}");
            }
            Ok(())
        })?;
    }

    /// Whole runs: a task of weighted flows ends when the same task with
    /// each weighted flow written out as its members does (to the
    /// picosecond), and links carry the same bytes.
    #[test]
    fn a_weighted_run_ends_as_the_run_of_its_members(
        n in net(),
        weights in proptest::collection::vec(1u32..5, 24),
    ) {
        let p = platform(&n);
        let ends = |weighted: bool| -> Result<(Vec<u64>, Vec<f64>), TestCaseError> {
            let mut g = TaskGraph::new();
            let mut tasks = Vec::new();
            for (i, (path, bytes, start)) in n.flows.iter().enumerate() {
                let links: Vec<LinkId> = path.iter().map(|&l| LinkId(l)).collect();
                let pid = g.add_path(&links);
                let s = g.add_stream(i as u32, "s");
                g.add_delay(s, "wait", SimDuration(*start));
                let flow = Flow { path: pid, bytes: *bytes };
                tasks.push(if weighted {
                    g.add_weighted_comm(s, "flow", &[(flow, weights[i])], None)
                } else {
                    g.add_comm(s, "flow", (0..weights[i]).map(|_| flow), None)
                });
            }
            let r = run(&p, &g, &EngineOptions::default(), &mut Quiet).map_err(|e| TestCaseError::fail(e.to_string()))?;
            Ok((tasks.iter().map(|t| r.spans[t.0 as usize].end.0).collect(), r.links.iter().map(|l| l.bytes).collect()))
        };
        let (w_ends, w_bytes) = ends(true)?;
        let (m_ends, m_bytes) = ends(false)?;
        for (i, (a, b)) in w_ends.iter().zip(&m_ends).enumerate() {
            prop_assert!(a.abs_diff(*b) <= 1, "flow {i} ends at {a} weighted and {b} as members");
        }
        for (l, (a, b)) in w_bytes.iter().zip(&m_bytes).enumerate() {
            prop_assert!((a - b).abs() <= 1e-9 * b.max(1.0), "link {l}: {a} vs {b} bytes");
        }
    }
}
