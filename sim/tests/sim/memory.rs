//! Communication and kernels sharing a device's memory (issue #15): the
//! memory link, the units-weighted two-class max-min rule, and
//! `FlowSolver::set_link_capacity`, with hand-computed numbers.

use moesim_sim::flow::FlowSolver;
use moesim_sim::*;

/// Bytes per second that make one byte per picosecond.
const B_PER_PS: f64 = 1e12;

fn link(name: &str, kind: LinkKind, bytes_per_s: f64) -> LinkResource {
    LinkResource { name: name.into(), kind, bytes_per_s, latency: SimDuration::ZERO }
}

/// One device of 132 units and 1 B/ps of memory; a 0.5 B/ps network link;
/// with `shared`, a memory link attached to the device. Returns the
/// platform, the device and the path of a flow (memory link first).
fn platform(shared: bool) -> (Platform, DeviceId, Vec<LinkId>) {
    let mut p = Platform::default();
    let d = p.add_device(DeviceResource { name: "gpu".into(), units: 132, mem_bytes_per_s: B_PER_PS });
    let net = p.add_link(link("net", LinkKind::Physical("test"), 0.5 * B_PER_PS));
    let mut path = vec![net];
    if shared {
        let hbm = p.add_link(link("gpu HBM", LinkKind::Construct("hbm"), B_PER_PS));
        p.attach_memory_link(d, hbm);
        path.insert(0, hbm);
    }
    (p, d, path)
}

fn run_ok(p: &Platform, g: &TaskGraph) -> RunResult {
    run(p, g, &EngineOptions::default(), &mut Quiet).expect("run")
}

fn span(r: &RunResult, t: TaskId) -> (u64, u64) {
    let s = r.spans[t.0 as usize];
    (s.start.0, s.end.0)
}

/// A memory-bound kernel (3e6 bytes; its compute side 1,000 ps) beside a
/// communication of 1e6 bytes holding `hold` units.
fn side_by_side(shared: bool, hold: u32, kernel: Kernel) -> (u64, u64) {
    let (p, d, links) = platform(shared);
    let mut g = TaskGraph::new();
    let path = g.add_path(&links);
    let s0 = g.add_stream(0, "compute");
    let k = g.add_kernel(s0, "cast", TaskClass::Memory, Kernel { device: d, ..kernel });
    let s1 = g.add_stream(0, "comm");
    let c = g.add_comm(s1, "dispatch", [Flow { path, bytes: 1e6 }], Some((d, hold)));
    let r = run_ok(&p, &g);
    (span(&r, k).1, span(&r, c).1)
}

fn memory_bound() -> Kernel {
    Kernel {
        device: DeviceId(0),
        compute: SimDuration(1_000),
        mem_bytes: 3e6,
        units: UnitDemand::Share { max_units: 132 },
    }
}

#[test]
fn without_a_memory_link_communication_takes_no_memory() {
    // The kernel alone on memory: 3e6 B at 1 B/ps; the flow at the link's 0.5.
    assert_eq!(side_by_side(false, 33, memory_bound()), (3_000_000, 2_000_000));
}

#[test]
fn a_saturating_kernel_and_communication_share_memory_by_units() {
    // The kernel (99 units) demands far more than 1 B/ps; communication holds
    // 33 of 132 units, so its share is 1 x 33 / 132 = 0.25 B/ps (below the
    // network's 0.5): 1e6 B take 4e6 ps. The kernel gets the 0.75 left:
    // 3e6 B take 4e6 ps too.
    assert_eq!(side_by_side(true, 33, memory_bound()), (4_000_000, 4_000_000));
}

#[test]
fn a_compute_bound_kernel_neither_slows_nor_is_slowed() {
    // Holding 99 units, the kernel runs 3e6 x 132 / 99 = 4e6 ps and needs
    // 1e6 B over that, 0.25 B/ps: the memory link keeps 0.75 for
    // communication, which runs at the network's 0.5 (2e6 ps), and the
    // kernel still gets its 0.25 of the 0.5 left.
    let kernel =
        Kernel { device: DeviceId(0), compute: SimDuration(3_000_000), mem_bytes: 1e6, units: UnitDemand::Hold(99) };
    assert_eq!(side_by_side(true, 33, kernel), (4_000_000, 2_000_000));
}

#[test]
fn communication_alone_may_use_all_the_memory() {
    // A flow through the memory link and a 2 B/ps link: bound by memory, 1 B/ps.
    let mut p = Platform::default();
    let d = p.add_device(DeviceResource { name: "gpu".into(), units: 132, mem_bytes_per_s: B_PER_PS });
    let hbm = p.add_link(link("gpu HBM", LinkKind::Construct("hbm"), B_PER_PS));
    let net = p.add_link(link("net", LinkKind::Physical("test"), 2.0 * B_PER_PS));
    p.attach_memory_link(d, hbm);
    let mut g = TaskGraph::new();
    let path = g.add_path(&[hbm, net]);
    let s = g.add_stream(0, "comm");
    let c = g.add_comm(s, "copy", [Flow { path, bytes: 1e6 }], None);
    assert_eq!(span(&run_ok(&p, &g), c), (0, 1_000_000));
}

#[test]
fn a_copy_engine_beside_a_saturating_kernel_keeps_one_percent() {
    // No units held: communication's share by units is 0, and the kernel
    // leaves nothing, so the link keeps its floor of 1 % (0.01 B/ps): 1e4 B
    // take 1e6 ps.
    let (p, d, links) = platform(true);
    let mut g = TaskGraph::new();
    let path = g.add_path(&links);
    let s0 = g.add_stream(0, "compute");
    g.add_kernel(s0, "cast", TaskClass::Memory, Kernel { device: d, ..memory_bound() });
    let s1 = g.add_stream(0, "copy");
    let c = g.add_comm(s1, "copy", [Flow { path, bytes: 1e4 }], None);
    assert_eq!(span(&run_ok(&p, &g), c), (0, 1_000_000));
}

#[test]
fn two_memory_links_on_one_device_are_refused() {
    let (mut p, d, links) = platform(true);
    p.attach_memory_link(d, links[1]);
    let g = TaskGraph::new();
    let e = run(&p, &g, &EngineOptions::default(), &mut Quiet).unwrap_err();
    assert!(e.to_string().contains("more than one memory link"), "{e}");
}

#[test]
fn set_link_capacity_recomputes_only_when_the_link_binds() {
    // Two flows on link 0 (capacity 1 B/ps): 0.5 each.
    let mut p = Platform::default();
    let l = p.add_link(link("a", LinkKind::Physical("test"), B_PER_PS));
    let mut g = TaskGraph::new();
    let path = g.add_path(&[l]);
    let s = g.add_stream(0, "s");
    g.add_comm(s, "c", [Flow { path, bytes: 1e6 }, Flow { path, bytes: 1e6 }], None);
    let mut solver = FlowSolver::new(&p, 2, false);
    solver.start_flow(&g, 0, 1e6);
    solver.start_flow(&g, 1, 1e6);
    let mut dues = Vec::new();
    solver.recompute(&g, 0, &mut dues);
    assert_eq!(solver.rate_bytes_per_s(0), 0.5 * B_PER_PS);
    // The link binds: halving its capacity halves the rates.
    solver.set_link_capacity(l, 0.5 * B_PER_PS);
    assert!(solver.needs_recompute());
    dues.clear();
    solver.recompute(&g, 1_000, &mut dues);
    assert_eq!(solver.rate_bytes_per_s(0), 0.25 * B_PER_PS);
    assert_eq!(solver.link_rate_bytes_per_s(l), 0.5 * B_PER_PS);
    // Bytes already sent stay sent: 1e6 - 0.5 x 1,000 left at 0.25 B/ps.
    assert_eq!(dues[0].time, 1_000 + ((1e6 - 500.0) / 0.25) as u64);
}

#[test]
fn set_link_capacity_on_a_link_that_binds_nothing_changes_nothing() {
    // One flow over a 1 B/ps link and a 4 B/ps link: the 4 B/ps one does not
    // bind; lowering it to 2 keeps every rate and needs no recompute.
    let mut p = Platform::default();
    let a = p.add_link(link("a", LinkKind::Physical("test"), B_PER_PS));
    let b = p.add_link(link("b", LinkKind::Construct("hbm"), 4.0 * B_PER_PS));
    let mut g = TaskGraph::new();
    let path = g.add_path(&[a, b]);
    let s = g.add_stream(0, "s");
    g.add_comm(s, "c", [Flow { path, bytes: 1e6 }], None);
    let mut solver = FlowSolver::new(&p, 1, false);
    solver.start_flow(&g, 0, 1e6);
    let mut dues = Vec::new();
    solver.recompute(&g, 0, &mut dues);
    solver.set_link_capacity(b, 2.0 * B_PER_PS);
    assert!(!solver.needs_recompute());
    assert_eq!(solver.rate_bytes_per_s(0), B_PER_PS);
    // Below the flow's rate it binds: 0.5 B/ps.
    solver.set_link_capacity(b, 0.5 * B_PER_PS);
    assert!(solver.needs_recompute());
    solver.recompute(&g, 0, &mut dues);
    assert_eq!(solver.rate_bytes_per_s(0), 0.5 * B_PER_PS);
}
