//! The engine with hand-computed numbers, and error cases.

use moesim_sim::flow::{FlowDue, FlowSolver};
use moesim_sim::*;

/// Bytes per second that make one byte per picosecond.
const B_PER_PS: f64 = 1e12;

fn gpu(units: u32, mem_bytes_per_s: f64) -> DeviceResource {
    DeviceResource { name: "gpu".into(), units, mem_bytes_per_s }
}

fn link(bytes_per_s: f64, latency_ps: u64) -> LinkResource {
    LinkResource {
        name: "link".into(),
        kind: LinkKind::Physical("test"),
        bytes_per_s,
        latency: SimDuration(latency_ps),
    }
}

fn kernel(device: DeviceId, compute_ps: u64, mem_bytes: f64, units: UnitDemand) -> Kernel {
    Kernel { device, compute: SimDuration(compute_ps), mem_bytes, units }
}

fn run_ok(p: &Platform, g: &TaskGraph) -> RunResult {
    run(p, g, &EngineOptions::default(), &mut Quiet).expect("run")
}

fn span(r: &RunResult, t: TaskId) -> (u64, u64) {
    let s = r.spans[t.0 as usize];
    (s.start.0, s.end.0)
}

#[test]
fn stream_order_and_cross_stream_deps() {
    let p = Platform::default();
    let mut g = TaskGraph::new();
    let s0 = g.add_stream(0, "s0");
    let s1 = g.add_stream(1, "s1");
    let a = g.add_delay(s0, "a", SimDuration(10));
    let b = g.add_delay(s0, "b", SimDuration(5));
    let c = g.add_delay(s1, "c", SimDuration(3));
    let d = g.add_delay(s1, "d", SimDuration(1));
    let e = g.add_delay(s1, "e", SimDuration(2));
    g.add_dep(a, c);
    g.add_dep(d, b);
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, a), (0, 10));
    assert_eq!(span(&r, c), (10, 13));
    assert_eq!(span(&r, d), (13, 14));
    assert_eq!(span(&r, e), (14, 16));
    assert_eq!(span(&r, b), (14, 19));
    assert_eq!(r.end, SimTime(19));
    assert_eq!(r.events, 5);
}

#[test]
fn delay_chains_add_up_and_zero_delays_join() {
    let p = Platform::default();
    let mut g = TaskGraph::new();
    let s = g.add_stream(0, "s");
    let mut last = g.add_delay(s, "first", SimDuration(7));
    for _ in 0..999 {
        last = g.add_delay(s, "d", SimDuration(7));
    }
    let s2 = g.add_stream(0, "side");
    let join = g.add_delay(s2, "join", SimDuration::ZERO);
    g.add_dep(last, join);
    let after = g.add_delay(s2, "after", SimDuration::ZERO);
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, last), (6993, 7000));
    assert_eq!(span(&r, join), (7000, 7000));
    assert_eq!(span(&r, after), (7000, 7000));
    assert_eq!(r.end, SimTime(7000));
}

#[test]
fn equal_time_events_are_deterministic() {
    let mut p = Platform::default();
    let d = p.add_device(gpu(132, 3e12));
    let l = p.add_link(link(1e11, 100));
    let build = || {
        let mut g = TaskGraph::new();
        let path = g.add_path(&[l]);
        for i in 0..20 {
            let s = g.add_stream(i, "s");
            g.add_delay(s, "z", SimDuration(if i % 3 == 0 { 0 } else { 50 }));
            g.add_kernel(
                s,
                "k",
                TaskClass::Compute,
                kernel(d, 1000 + 7 * i as u64, 1e6, UnitDemand::Share { max_units: 40 }),
            );
            g.add_comm(s, "c", [Flow { path, bytes: 1e4 + i as f64 }], Some((d, 4)));
            g.add_delay(s, "z2", SimDuration::ZERO);
        }
        g
    };
    let opts = EngineOptions { record_link_series: true, ..EngineOptions::default() };
    let r1 = run(&p, &build(), &opts, &mut Quiet).unwrap();
    let r2 = run(&p, &build(), &opts, &mut Quiet).unwrap();
    assert_eq!(r1, r2);
    assert!(r1.end > SimTime(0));
    assert!(!r1.link_series[0].is_empty());
}

#[test]
fn gemm_alone_takes_its_compute_time() {
    let mut p = Platform::default();
    let d = p.add_device(gpu(132, 1e15));
    let mut g = TaskGraph::new();
    let s = g.add_stream(0, "s");
    let k =
        g.add_kernel(s, "gemm", TaskClass::Compute, kernel(d, 1_234_567, 1e3, UnitDemand::Share { max_units: 132 }));
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, k), (0, 1_234_567));
    assert_eq!(r.devices[0].busy_ps, 1_234_567);
    assert!((r.devices[0].unit_ps - 132.0 * 1_234_567.0).abs() < 1.0);
    assert_eq!(r.devices[0].mem_bytes, 1e3);
}

#[test]
fn hold_20_of_132_slows_gemm_by_132_over_112() {
    let mut p = Platform::default();
    let d = p.add_device(gpu(132, 1e15));
    let mut g = TaskGraph::new();
    let s0 = g.add_stream(0, "compute");
    let s1 = g.add_stream(0, "comm");
    let gemm =
        g.add_kernel(s0, "gemm", TaskClass::Compute, kernel(d, 112_000, 0.0, UnitDemand::Share { max_units: 132 }));
    // 100_000 ps of work at all units takes 660_000 ps on 20 of 132.
    let hold = g.add_kernel(s1, "comm-kernel", TaskClass::Communication, kernel(d, 100_000, 0.0, UnitDemand::Hold(20)));
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, gemm), (0, 132_000));
    assert_eq!(span(&r, hold), (0, 660_000));
    assert_eq!(r.devices[0].busy_ps, 660_000);
    let want = 132.0 * 132_000.0 + 20.0 * 528_000.0;
    assert!((r.devices[0].unit_ps - want).abs() < 1.0, "{}", r.devices[0].unit_ps);
}

#[test]
fn share_kernels_are_capped_by_max_units() {
    let mut p = Platform::default();
    let d = p.add_device(gpu(132, 1e15));
    // Alone on 66 units: twice its compute time.
    let mut g = TaskGraph::new();
    let s0 = g.add_stream(0, "a");
    let s1 = g.add_stream(0, "b");
    let s2 = g.add_stream(0, "c");
    let lone =
        g.add_kernel(s2, "lone", TaskClass::Compute, kernel(d, 66_000, 0.0, UnitDemand::Share { max_units: 66 }));
    // Then a Share{22} beside a Share{132}: 22 + 110 units; when the small one
    // ends at 132_000 the big one has done half and runs on all 132 units.
    let small =
        g.add_kernel(s0, "small", TaskClass::Compute, kernel(d, 22_000, 0.0, UnitDemand::Share { max_units: 22 }));
    let big =
        g.add_kernel(s1, "big", TaskClass::Compute, kernel(d, 220_000, 0.0, UnitDemand::Share { max_units: 132 }));
    g.add_dep(lone, small);
    g.add_dep(lone, big);
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, lone), (0, 132_000));
    assert_eq!(span(&r, small), (132_000, 264_000));
    assert_eq!(span(&r, big), (132_000, 374_000));
    // Two uncapped sharers split the device evenly.
    let mut g = TaskGraph::new();
    let s_a = g_stream(&mut g);
    let a = g.add_kernel(s_a, "a", TaskClass::Compute, kernel(d, 100_000, 0.0, UnitDemand::Share { max_units: 132 }));
    let s_b = g_stream(&mut g);
    let b = g.add_kernel(s_b, "b", TaskClass::Compute, kernel(d, 100_000, 0.0, UnitDemand::Share { max_units: 132 }));
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, a), (0, 200_000));
    assert_eq!(span(&r, b), (0, 200_000));
}

fn g_stream(g: &mut TaskGraph) -> StreamId {
    let n = g.streams().len() as u32;
    g.add_stream(n, "s")
}

#[test]
fn memory_bound_kernels_share_hbm_and_roofline_holds() {
    let mut p = Platform::default();
    // 1 byte per picosecond of memory bandwidth.
    let d = p.add_device(gpu(132, B_PER_PS));
    let share = UnitDemand::Share { max_units: 132 };
    // Alone: max(C, B / BW).
    let mut g = TaskGraph::new();
    let s_mem = g_stream(&mut g);
    let mem = g.add_kernel(s_mem, "mem", TaskClass::Memory, kernel(d, 1_000, 1e6, share));
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, mem), (0, 1_000_000));
    let mut g = TaskGraph::new();
    let s_comp = g_stream(&mut g);
    let comp = g.add_kernel(s_comp, "comp", TaskClass::Compute, kernel(d, 5_000_000, 1e6, share));
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, comp), (0, 5_000_000));
    // Two memory-bound kernels side by side: each takes twice as long.
    let mut g = TaskGraph::new();
    let s_a = g_stream(&mut g);
    let a = g.add_kernel(s_a, "a", TaskClass::Memory, kernel(d, 1_000, 1e6, share));
    let s_b = g_stream(&mut g);
    let b = g.add_kernel(s_b, "b", TaskClass::Memory, kernel(d, 0, 1e6, UnitDemand::Hold(1)));
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, a), (0, 2_000_000));
    assert_eq!(span(&r, b), (0, 2_000_000));
    assert_eq!(r.devices[0].mem_bytes, 2e6);
    // A compute-bound kernel keeps the bandwidth it needs; the memory-bound one
    // gets the rest: hold 66 units each; the compute-bound one needs
    // 1e6 bytes over 2 * 2e6 ps = 0.25 B/ps, leaving 0.75 B/ps.
    let mut g = TaskGraph::new();
    let s_c = g_stream(&mut g);
    let c = g.add_kernel(s_c, "c", TaskClass::Compute, kernel(d, 2_000_000, 1e6, UnitDemand::Hold(66)));
    let s_m = g_stream(&mut g);
    let m = g.add_kernel(s_m, "m", TaskClass::Memory, kernel(d, 0, 1.5e6, UnitDemand::Hold(66)));
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, m), (0, 2_000_000));
    assert_eq!(span(&r, c), (0, 4_000_000));
}

#[test]
fn zero_work_kernel_finishes_at_once() {
    let mut p = Platform::default();
    let d = p.add_device(gpu(8, 1e12));
    let mut g = TaskGraph::new();
    let s = g.add_stream(0, "s");
    let a = g.add_kernel(s, "nop", TaskClass::Compute, kernel(d, 0, 0.0, UnitDemand::Hold(3)));
    let b = g.add_delay(s, "after", SimDuration(4));
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, a), (0, 0));
    assert_eq!(span(&r, b), (0, 4));
    assert_eq!(r.devices[0].busy_ps, 0);
}

#[test]
fn hold_kernel_without_free_units_waits_for_them() {
    let mut p = Platform::default();
    let d = p.add_device(gpu(10, 1e15));
    let mut g = TaskGraph::new();
    // First holds all 10 units for 1000 ps; the second gets none until then.
    let s_a = g_stream(&mut g);
    let a = g.add_kernel(s_a, "a", TaskClass::Compute, kernel(d, 1_000, 0.0, UnitDemand::Hold(10)));
    let s_b = g_stream(&mut g);
    let b = g.add_kernel(s_b, "b", TaskClass::Compute, kernel(d, 1_000, 0.0, UnitDemand::Hold(5)));
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, a), (0, 1_000));
    assert_eq!(span(&r, b), (0, 3_000));
}

#[test]
fn one_flow_takes_bytes_over_rate_plus_latency() {
    let mut p = Platform::default();
    let l0 = p.add_link(link(B_PER_PS, 300));
    let l1 = p.add_link(link(2.0 * B_PER_PS, 200));
    let mut g = TaskGraph::new();
    let path = g.add_path(&[l0, l1]);
    let s_c = g_stream(&mut g);
    let c = g.add_comm(s_c, "send", [Flow { path, bytes: 1000.0 }], None);
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, c), (0, 1500));
    assert_eq!(r.links[0].bytes, 1000.0);
    assert_eq!(r.links[1].bytes, 1000.0);
    assert_eq!(r.links[0].busy_ps, 1000);
    assert_eq!(r.links[1].busy_ps, 1000);
    assert_eq!(r.links[0].peak_bytes_per_s, B_PER_PS);
    assert_eq!(r.links[1].peak_bytes_per_s, B_PER_PS);
}

#[test]
fn two_flows_on_one_link_share_it() {
    let mut p = Platform::default();
    let l = p.add_link(link(B_PER_PS, 50));
    let mut g = TaskGraph::new();
    let path = g.add_path(&[l]);
    let s_a = g_stream(&mut g);
    let a = g.add_comm(s_a, "a", [Flow { path, bytes: 1000.0 }], None);
    let s_b = g_stream(&mut g);
    let b = g.add_comm(s_b, "b", [Flow { path, bytes: 1000.0 }], None);
    let r = run(&p, &g, &EngineOptions { record_link_series: true, ..EngineOptions::default() }, &mut Quiet).unwrap();
    assert_eq!(span(&r, a), (0, 2050));
    assert_eq!(span(&r, b), (0, 2050));
    assert_eq!(r.links[0].busy_ps, 2000);
    assert_eq!(r.links[0].bytes, 2000.0);
    let series: Vec<(u64, f64)> = r.link_series[0].iter().map(|s| (s.time.0, s.bytes_per_s)).collect();
    assert_eq!(series, vec![(0, B_PER_PS), (2000, 0.0)]);
}

#[test]
fn a_finish_tolerance_lets_flows_due_soon_finish_together() {
    // Two flows share a link (half its rate each); the longer one has 0.5 %
    // more bytes, so alone it would finish 10 ps after the other.
    let mut p = Platform::default();
    let l = p.add_link(link(B_PER_PS, 0));
    let mut g = TaskGraph::new();
    let path = g.add_path(&[l]);
    let s_a = g_stream(&mut g);
    let a = g.add_comm(s_a, "a", [Flow { path, bytes: 1000.0 }], None);
    let s_b = g_stream(&mut g);
    let b = g.add_comm(s_b, "b", [Flow { path, bytes: 1005.0 }], None);
    let opts = |tol| EngineOptions { flow_finish_tolerance: tol, ..EngineOptions::default() };
    let exact = run(&p, &g, &opts(0.0), &mut Quiet).unwrap();
    assert_eq!((span(&exact, a), span(&exact, b)), ((0, 2000), (0, 2005)));
    assert_eq!((exact.flow_recomputes, exact.flows_finished_early), (3, 0));
    // b is due 5 ps after a, 0.25 % of its 2,005 ps: a tolerance of 0.1 %
    // keeps it apart, 0.5 % takes it along (one recompute fewer).
    let tight = run(&p, &g, &opts(0.001), &mut Quiet).unwrap();
    assert_eq!(tight.spans, exact.spans);
    let loose = run(&p, &g, &opts(0.005), &mut Quiet).unwrap();
    assert_eq!((span(&loose, a), span(&loose, b)), ((0, 2000), (0, 2000)));
    assert_eq!((loose.flow_recomputes, loose.flows_finished_early), (2, 1));
    // The link's bytes are the flows' sizes either way.
    assert_eq!(loose.links[0].bytes, 2005.0);
}

/// A communication built with `add_task` may reuse another's flows; each
/// finished flow still ends the task that started it.
#[test]
fn a_comm_reusing_flows_of_an_earlier_one_ends_on_its_own() {
    let mut p = Platform::default();
    let l = p.add_link(link(B_PER_PS, 0));
    let mut g = TaskGraph::new();
    let path = g.add_path(&[l]);
    let s = g_stream(&mut g);
    let first = g.add_comm(s, "first", [Flow { path, bytes: 1000.0 }, Flow { path, bytes: 3000.0 }], None);
    let label = g.label("again");
    let again = g.add_task(
        s,
        label,
        TaskClass::Communication,
        TaskKind::Comm(Comm { flows: 1..2, hold: None, overhead: SimDuration::ZERO }),
    );
    let r = run_ok(&p, &g);
    // 0.5 B/ps each until flow 0 ends at 2000; flow 1 then has 2000 left at
    // 1 B/ps. `again` resends flow 1 (3000 bytes) alone.
    assert_eq!(span(&r, first), (0, 4000));
    assert_eq!(span(&r, again), (4000, 7000));
    assert_eq!(r.links[0].bytes, 7000.0);
}

#[test]
fn empty_path_and_zero_byte_flows_wait_only_latency() {
    let mut p = Platform::default();
    let l = p.add_link(link(B_PER_PS, 70));
    let mut g = TaskGraph::new();
    let empty = g.add_path(&[]);
    let one = g.add_path(&[l]);
    let s_a = g_stream(&mut g);
    let a = g.add_comm(s_a, "a", [Flow { path: empty, bytes: 1e9 }], None);
    let s_b = g_stream(&mut g);
    let b = g.add_comm(s_b, "b", [Flow { path: one, bytes: 0.0 }, Flow { path: empty, bytes: 0.0 }], None);
    let s_c = g_stream(&mut g);
    let c = g.add_comm(s_c, "none", [], None);
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, a), (0, 0));
    assert_eq!(span(&r, b), (0, 70));
    assert_eq!(span(&r, c), (0, 0));
    assert_eq!(r.links[0].busy_ps, 0);
}

/// Links of capacity 1 and 2 B/ps and the paths over link 1, link 2 and both.
fn two_links() -> (Platform, TaskGraph, [PathId; 3]) {
    let mut p = Platform::default();
    let l1 = p.add_link(link(B_PER_PS, 0));
    let l2 = p.add_link(link(2.0 * B_PER_PS, 0));
    let mut g = TaskGraph::new();
    let paths = [g.add_path(&[l1]), g.add_path(&[l2]), g.add_path(&[l1, l2])];
    (p, g, paths)
}

/// Links of capacity 1 and 2 B/ps; A on link 1, B on link 2, C on both.
fn bottleneck(a_bytes: f64, b_bytes: f64, c_bytes: f64) -> (Platform, TaskGraph, [TaskId; 3]) {
    let (p, mut g, [pa, pb, pc]) = two_links();
    let s_a = g_stream(&mut g);
    let a = g.add_comm(s_a, "A", [Flow { path: pa, bytes: a_bytes }], None);
    let s_b = g_stream(&mut g);
    let b = g.add_comm(s_b, "B", [Flow { path: pb, bytes: b_bytes }], None);
    let s_c = g_stream(&mut g);
    let c = g.add_comm(s_c, "C", [Flow { path: pc, bytes: c_bytes }], None);
    (p, g, [a, b, c])
}

#[test]
fn classic_two_link_bottleneck_rates() {
    let (p, g, _) = bottleneck(1.0, 1.0, 1.0);
    let mut solver = FlowSolver::new(&p, 3, false);
    for (f, bytes) in [(0, 1000.0), (1, 6000.0), (2, 2000.0)] {
        solver.start_flow(&g, f, bytes);
    }
    let mut dues = Vec::new();
    solver.recompute(&g, 0, &mut dues);
    let rates: Vec<f64> = (0..3).map(|f| solver.rate_bytes_per_s(f) / B_PER_PS).collect();
    assert_eq!(rates, vec![0.5, 1.5, 0.5]);
    assert_eq!(solver.link_rate_bytes_per_s(LinkId(0)), B_PER_PS);
    assert_eq!(solver.link_rate_bytes_per_s(LinkId(1)), 2.0 * B_PER_PS);
    assert_eq!(dues.len(), 1);
    assert_eq!(dues[0].time, 2000);
    // A finishes at 2000; C and B then get 1 each.
    let mut done = Vec::new();
    assert!(solver.complete_due(&g, dues[0], 2000, &mut done));
    assert_eq!(done, vec![0]);
    assert!(!solver.complete_due(&g, FlowDue { ..dues[0] }, 2000, &mut Vec::new()), "a used due is stale");
    dues.clear();
    solver.recompute(&g, 2000, &mut dues);
    let rates: Vec<f64> = (0..3).map(|f| solver.rate_bytes_per_s(f) / B_PER_PS).collect();
    assert_eq!(rates, vec![0.0, 1.0, 1.0]);
    assert!(!solver.is_active(0) && solver.is_active(1));
    assert_eq!(dues.len(), 1);
    assert_eq!(dues[0].time, 3000);
}

#[test]
fn a_finishing_flow_frees_bandwidth_for_the_others() {
    // A and C share link 1 at 0.5 each until A ends at 2000; then C gets 1
    // (link 1 alone) and B 1 (link 2 minus C) until C ends at 3000; then B
    // runs at 2 and ends at 3000 + 2000 / 2 = 4000.
    let (p, g, [a, b, c]) = bottleneck(1000.0, 6000.0, 2000.0);
    let r = run(&p, &g, &EngineOptions { record_link_series: true, ..EngineOptions::default() }, &mut Quiet).unwrap();
    assert_eq!(span(&r, a), (0, 2000));
    assert_eq!(span(&r, c), (0, 3000));
    assert_eq!(span(&r, b), (0, 4000));
    assert_eq!(r.links[0].bytes, 3000.0);
    assert_eq!(r.links[1].bytes, 8000.0);
    let s1: Vec<(u64, f64)> = r.link_series[0].iter().map(|s| (s.time.0, s.bytes_per_s / B_PER_PS)).collect();
    assert_eq!(s1, vec![(0, 1.0), (3000, 0.0)]);
    let s2: Vec<(u64, f64)> = r.link_series[1].iter().map(|s| (s.time.0, s.bytes_per_s / B_PER_PS)).collect();
    assert_eq!(s2, vec![(0, 2.0), (4000, 0.0)]);
    assert_eq!(r.links[1].busy_ps, 4000);
    assert_eq!(r.end, SimTime(4000));
}

#[test]
fn comm_hold_slows_a_concurrent_kernel() {
    let mut p = Platform::default();
    let d = p.add_device(gpu(132, 1e15));
    let l = p.add_link(link(B_PER_PS, 0));
    let mut g = TaskGraph::new();
    let path = g.add_path(&[l]);
    let s_gemm = g_stream(&mut g);
    let gemm =
        g.add_kernel(s_gemm, "gemm", TaskClass::Compute, kernel(d, 112_000, 0.0, UnitDemand::Share { max_units: 132 }));
    let s_comm = g_stream(&mut g);
    let comm = g.add_comm(s_comm, "a2a", [Flow { path, bytes: 1e6 }], Some((d, 20)));
    let r = run_ok(&p, &g);
    assert_eq!(span(&r, gemm), (0, 132_000));
    assert_eq!(span(&r, comm), (0, 1_000_000));
    assert_eq!(r.devices[0].busy_ps, 1_000_000);
    // Hold ends with the comm: a second GEMM afterwards runs at full speed.
    let mut g2 = g.clone();
    let s = g2.add_stream(9, "late");
    let late =
        g2.add_kernel(s, "late", TaskClass::Compute, kernel(d, 112_000, 0.0, UnitDemand::Share { max_units: 132 }));
    g2.add_dep(comm, late);
    let r = run_ok(&p, &g2);
    assert_eq!(span(&r, late), (1_000_000, 1_112_000));
}

#[test]
fn cycles_and_dangling_deps_are_reported_by_run() {
    let p = Platform::default();
    let mut g = TaskGraph::new();
    let s = g.add_stream(0, "s");
    let a = g.add_delay(s, "a", SimDuration(1));
    let b = g.add_delay(s, "b", SimDuration(1));
    g.add_dep(b, a);
    let err = run(&p, &g, &EngineOptions::default(), &mut Quiet).unwrap_err();
    assert!(matches!(err, SimError::Cycle { count: 2, .. }), "{err}");
    let mut g = TaskGraph::new();
    let s = g.add_stream(0, "s");
    let a = g.add_delay(s, "a", SimDuration(1));
    g.add_dep(a, TaskId(5));
    let err = run(&p, &g, &EngineOptions::default(), &mut Quiet).unwrap_err();
    assert!(matches!(err, SimError::DanglingDependency { missing: 5, .. }), "{err}");
    let mut p2 = Platform::default();
    p2.add_link(link(0.0, 0));
    let err = run(&p2, &TaskGraph::new(), &EngineOptions::default(), &mut Quiet).unwrap_err();
    assert!(matches!(err, SimError::BadResource(_)), "{err}");
}

#[test]
fn empty_graph_runs_to_time_zero() {
    let r = run_ok(&Platform::default(), &TaskGraph::new());
    assert_eq!(r.end, SimTime::ZERO);
    assert_eq!(r.events, 0);
}

struct Count(usize, usize);
impl Observer for Count {
    fn progress(&mut self, finished: usize, total: usize, _now: SimTime) {
        self.0 += 1;
        self.1 = finished.max(self.1);
        assert!(finished <= total);
    }
}

#[test]
fn observer_hears_progress_and_the_end() {
    let p = Platform::default();
    let mut g = TaskGraph::new();
    let s = g.add_stream(0, "s");
    for _ in 0..70_000 {
        g.add_delay(s, "d", SimDuration(1));
    }
    let mut obs = Count(0, 0);
    let r = run(&p, &g, &EngineOptions::default(), &mut obs).unwrap();
    assert_eq!(r.events, 70_000);
    assert_eq!(obs.0, 2);
    assert_eq!(obs.1, 70_000);
}

#[test]
fn a_comm_overhead_is_added_after_the_last_arrival() {
    let mut p = Platform::default();
    let l = p.add_link(LinkResource {
        name: "l".into(),
        kind: LinkKind::Physical("test"),
        bytes_per_s: 1e9,
        latency: SimDuration::from_ns(100),
    });
    let mut g = TaskGraph::new();
    let s = g.add_stream(0, "comm");
    let path = g.add_path(&[l]);
    // 1000 bytes at 1 GB/s = 1 us, + 100 ns latency, + 5 us overhead.
    let t = g.add_comm(s, "send", [Flow { path, bytes: 1000.0 }], None);
    g.set_comm_overhead(t, SimDuration::from_ns(5000));
    let empty = g.add_comm(s, "nothing to send", [], None);
    g.set_comm_overhead(empty, SimDuration::from_ns(2000));
    let r = moesim_sim::run(&p, &g, &EngineOptions::default(), &mut Quiet).unwrap();
    assert_eq!(r.spans[t.0 as usize].end.as_ps(), 6_100_000);
    assert_eq!(r.spans[empty.0 as usize].end.as_ps(), 8_100_000);
}

#[test]
fn a_stalled_run_names_the_link_it_waits_on() {
    // A link so slow that its flow's rate rounds to nothing: the run can
    // neither finish it nor reach the end of time. The error names the task,
    // the link, its kind and its rate.
    let mut p = Platform::default();
    let l = p.add_link(LinkResource {
        name: "gpu0->gpu1".into(),
        kind: LinkKind::Physical("infiniband"),
        bytes_per_s: 5e-324,
        latency: SimDuration::ZERO,
    });
    let mut g = TaskGraph::new();
    let s = g.add_stream(0, "comm");
    let path = g.add_path(&[l]);
    g.add_comm(s, "send", [Flow { path, bytes: 1e6 }], None);
    match moesim_sim::run(&p, &g, &EngineOptions::default(), &mut Quiet) {
        Err(e @ SimError::Stalled { .. }) => {
            let text = e.to_string();
            assert!(text.contains("`send`") && text.contains("link `gpu0->gpu1` (infiniband"), "{text}");
            assert!(matches!(e, SimError::Stalled { resource_kind: Some("infiniband"), .. }));
        }
        other => panic!("expected a stall, got {other:?}"),
    }
}

/// Links of 1 and 2 B/ps; A (1000 bytes a member) on link 1, B (6000) on
/// link 2, C (2000) on both, with 3 members of A and 2 of B: as weighted
/// flows, or as that many separate flows.
fn weighted_bottleneck(weighted: bool) -> (Platform, TaskGraph, [TaskId; 3]) {
    let (p, mut g, [pa, pb, pc]) = two_links();
    let task = |g: &mut TaskGraph, name: &str, path, bytes, w: u32| {
        let s = g_stream(g);
        if weighted {
            g.add_weighted_comm(s, name, &[(Flow { path, bytes }, w)], None)
        } else {
            g.add_comm(s, name, (0..w).map(|_| Flow { path, bytes }), None)
        }
    };
    let a = task(&mut g, "A", pa, 1000.0, 3);
    let b = task(&mut g, "B", pb, 6000.0, 2);
    let c = task(&mut g, "C", pc, 2000.0, 1);
    (p, g, [a, b, c])
}

#[test]
fn a_weighted_flow_runs_as_its_members_would() {
    // Link 1 holds 4 members (3 of A, C): 0.25 each; link 2 then leaves
    // 2 - 0.25 = 1.75 to B's 2 members, 0.875 each. A ends at 1000 / 0.25
    // = 4000. Then link 2 holds 3 members at 2/3: C's 2000 - 1000 left end
    // at 4000 + 1500 = 5500, B has 6000 - 3500 - 1000 = 1500 left at 1 each:
    // 7000.
    for weighted in [true, false] {
        let (p, g, [a, b, c]) = weighted_bottleneck(weighted);
        assert_eq!(g.has_flow_weights(), weighted);
        let r = run_ok(&p, &g);
        assert_eq!(span(&r, a), (0, 4000), "weighted: {weighted}");
        assert_eq!(span(&r, c), (0, 5500), "weighted: {weighted}");
        assert_eq!(span(&r, b), (0, 7000), "weighted: {weighted}");
        assert_eq!(r.links[0].bytes, 5000.0);
        assert_eq!(r.links[1].bytes, 14_000.0);
        assert_eq!(r.flows_started, if weighted { 3 } else { 6 });
    }
}

#[test]
fn a_flow_of_weight_zero_is_rejected() {
    let mut p = Platform::default();
    let l = p.add_link(link(B_PER_PS, 0));
    let mut g = TaskGraph::new();
    let path = g.add_path(&[l]);
    let s = g_stream(&mut g);
    g.add_weighted_comm(s, "w0", &[(Flow { path, bytes: 1.0 }, 2), (Flow { path, bytes: 1.0 }, 0)], None);
    let err = run(&p, &g, &EngineOptions::default(), &mut Quiet).unwrap_err();
    assert!(err.to_string().contains("at least one member flow"), "{err}");
}

/// Bytes under a link series up to `end` (bytes per second x picoseconds
/// / 1e12).
fn series_bytes(s: &[LinkSample], end: u64) -> f64 {
    s.iter()
        .enumerate()
        .map(|(k, x)| x.bytes_per_s * (s.get(k + 1).map_or(end, |n| n.time.0) - x.time.0) as f64)
        .sum::<f64>()
        / B_PER_PS
}

/// 5,000 flows in sequence over link 0, every other one also over the
/// half-speed link 1 (with 7 ps of latency): link 0's rate alternates
/// 1 and 0.5 bytes/ps with gaps, 7,500 changes; the flows' sizes and
/// times are exact in picoseconds.
fn alternating_flows(n: usize, budget_bytes: u64) -> (RunResult, Vec<(u64, f64)>) {
    let mut p = Platform::default();
    let l0 = p.add_link(link(B_PER_PS, 0));
    let l1 = p.add_link(link(0.5 * B_PER_PS, 7));
    let mut g = TaskGraph::new();
    let (one, two) = (g.add_path(&[l0]), g.add_path(&[l0, l1]));
    let s = g_stream(&mut g);
    // Link 0's changes, as (time, bytes per ps).
    let (mut want, mut t) = (Vec::new(), 0u64);
    for i in 0..n {
        let bytes = 1000 * (1 + i as u64 % 3);
        let path = if i % 2 == 0 { one } else { two };
        g.add_comm(s, "f", [Flow { path, bytes: bytes as f64 }], None);
        if i % 2 == 0 {
            want.push((t, 1.0));
            t += bytes;
        } else {
            want.push((t, 0.5));
            t += 2 * bytes;
            want.push((t, 0.0));
            t += 7;
        }
    }
    let opts =
        EngineOptions { record_link_series: true, link_series_budget_bytes: budget_bytes, ..EngineOptions::default() };
    (run(&p, &g, &opts, &mut Quiet).unwrap(), want)
}

#[test]
fn a_long_link_series_is_exact_within_its_budget() {
    let (r, want) = alternating_flows(5000, moesim_sim::series::LINK_SERIES_BUDGET_BYTES);
    let got: Vec<(u64, f64)> = r.link_series[0].iter().map(|s| (s.time.0, s.bytes_per_s / B_PER_PS)).collect();
    assert_eq!(got.len(), 7500);
    assert_eq!(got, want);
    assert_eq!(r.links[0].bytes, (0..5000).map(|i| 1000.0 * (1 + i % 3) as f64).sum::<f64>());
    assert_eq!(series_bytes(&r.link_series[0], r.end.0), r.links[0].bytes);
}

#[test]
fn a_link_series_over_its_budget_keeps_its_cap_and_its_bytes() {
    // Two links and the minimum cap: at most 1,024 samples each.
    let cap = moesim_sim::series::MIN_LINK_SERIES_SAMPLES;
    let (r, _) = alternating_flows(5000, 16 * cap as u64);
    for l in 0..2 {
        let (s, bytes) = (&r.link_series[l], r.links[l].bytes);
        assert!(s.len() <= cap, "link {l}: {} samples", s.len());
        assert!(s.len() > cap / 4, "link {l}: only {} samples", s.len());
        let got = series_bytes(s, r.end.0);
        assert!((got - bytes).abs() <= 1e-9 * bytes, "link {l}: {got} bytes in the series, {bytes} carried");
    }
    // Link 1 carried every other flow.
    assert_eq!(r.links[1].bytes, (1..5000).step_by(2).map(|i| 1000.0 * (1 + i % 3) as f64).sum::<f64>());
}
