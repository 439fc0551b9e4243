//! The writers on a small hand-made run.

use moesim_reports::window::{EventWindow, WindowRequest};
use moesim_reports::{resources, summary, timeline, trace};
use moesim_sim::*;

fn run() -> (TaskGraph, Platform, RunResult) {
    let mut p = Platform::default();
    p.add_device(DeviceResource { name: "gpu0".into(), units: 4, mem_bytes_per_s: 1e12 });
    p.add_link(LinkResource {
        name: "a->\"b\"".into(),
        kind: LinkKind::Physical("nvlink"),
        bytes_per_s: 1e9,
        latency: SimDuration::ZERO,
    });
    let mut g = TaskGraph::new();
    let s = g.add_stream(0, "compute");
    let c = g.add_stream(1, "comm");
    g.add_delay(s, "wait", SimDuration::from_us_f64(1.0));
    let path = g.add_path(&[LinkId(0)]);
    g.add_comm(c, "send, \"quoted\"", [Flow { path, bytes: 1000.0 }], None);
    let r = RunResult {
        end: SimTime(2_000_000),
        events: 3,
        spans: vec![
            TaskSpan { start: SimTime(0), end: SimTime(1_000_000) },
            TaskSpan { start: SimTime(0), end: SimTime(1_000_000) },
        ],
        devices: vec![DeviceStats { busy_ps: 1_000_000, unit_ps: 2_000_000.0, mem_bytes: 0.0 }],
        links: vec![LinkStats { busy_ps: 1_000_000, bytes: 1000.0, peak_bytes_per_s: 1e9 }],
        link_series: vec![vec![
            LinkSample { time: SimTime(0), bytes_per_s: 1e9 },
            LinkSample { time: SimTime(1_000_000), bytes_per_s: 0.0 },
        ]],
        ..RunResult::default()
    };
    (g, p, r)
}

#[test]
fn timeline_has_a_row_per_task_with_times_in_us() {
    let (g, p, r) = run();
    let mut buf = Vec::new();
    timeline::write_csv(&mut buf, &g, &p, &r, &EventWindow::choose(&r, WindowRequest::All)).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "task_id,rank,stream,label,class,resource,start_us,end_us,duration_us");
    assert_eq!(lines[1], "0,0,compute,wait,other,,0.000000,1.000000,1.000000");
    assert_eq!(lines[2], "1,1,comm,\"send, \"\"quoted\"\"\",communication,network,0.000000,1.000000,1.000000");
}

#[test]
fn resources_report_utilisation_and_rates() {
    let (g, p, r) = run();
    let mut buf = Vec::new();
    resources::write_csv(&mut buf, &p, &g, &r, None).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("kind,id,name,status,link_kind,physical,busy_us,utilization,unit_utilization,bytes"));
    // busy 1 of 2 us; units 2e6 unit-ps of 4 x 2e6 = 0.25.
    assert_eq!(lines[1], "device,0,gpu0,simulated,,,1.000000,0.500000,0.250000,0,0.000000,");
    // 1000 bytes over 2 us = 0.5 GB/s average, 1 GB/s peak.
    assert_eq!(lines[2], "link,0,\"a->\"\"b\"\"\",,nvlink,true,1.000000,0.500000,,1000,0.500000,1.000000");
}

#[test]
fn devices_without_tasks_are_mirrored_inside_the_job_and_not_simulated_outside_it() {
    let (g, mut p, mut r) = run();
    for name in ["gpu1", "gpu2", "gpu3"] {
        p.add_device(DeviceResource { name: name.into(), units: 4, mem_bytes_per_s: 1e12 });
        r.devices.push(DeviceStats::default());
    }
    p.add_link(LinkResource {
        name: "gpu0 20 comm SMs send".into(),
        kind: LinkKind::Construct("sm-port"),
        bytes_per_s: 1e9,
        latency: SimDuration::ZERO,
    });
    r.links.push(LinkStats::default());
    // Streams run on ranks 0 and 1.
    let status = |job| resources::device_status(&p, &g, job).iter().map(|s| s.as_str()).collect::<Vec<_>>();
    assert_eq!(status(None), ["simulated", "simulated", "mirrored", "mirrored"]);
    assert_eq!(status(Some(3)), ["simulated", "simulated", "mirrored", "not-simulated"]);
    let mut buf = Vec::new();
    resources::write_csv(&mut buf, &p, &g, &r, Some(2)).unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(text.contains("device,3,gpu3,not-simulated,,,"), "{text}");
    assert!(text.contains("link,1,gpu0 20 comm SMs send,,sm-port,false,"), "{text}");
}

#[test]
fn trace_is_valid_json_with_spans_and_counters_and_is_deterministic() {
    let (g, p, r) = run();
    let all = EventWindow::choose(&r, WindowRequest::All);
    let mut a = Vec::new();
    trace::write_chrome_trace(&mut a, &g, &p, &r, &all).unwrap();
    let mut b = Vec::new();
    trace::write_chrome_trace(&mut b, &g, &p, &r, &all).unwrap();
    assert_eq!(a, b);
    let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
    let ev = v["traceEvents"].as_array().unwrap();
    let spans: Vec<_> = ev.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[1]["name"], "send, \"quoted\"");
    assert_eq!(spans[1]["pid"], 1);
    assert_eq!(spans[0]["dur"].as_f64().unwrap(), 1.0);
    let counters: Vec<_> = ev.iter().filter(|e| e["ph"] == "C").collect();
    assert_eq!(counters.len(), 2);
    assert_eq!(counters[0]["args"]["gb_per_s"].as_f64().unwrap(), 1.0);
    assert_eq!(counters[0]["pid"], 2, "network process after the last rank");
    assert!(ev.iter().any(|e| e["ph"] == "M" && e["args"]["name"] == "rank 1"));
    assert!(ev.iter().any(|e| e["ph"] == "M" && e["args"]["name"] == "comm"));
}

#[test]
fn summary_is_a_markdown_table() {
    let mut buf = Vec::new();
    summary::write_markdown(&mut buf, "t", &[("time_us".into(), "1.5".into()), ("a|b".into(), "x".into())]).unwrap();
    assert_eq!(
        String::from_utf8(buf).unwrap(),
        "# t\n\n| metric | value |\n|---|---|\n| time_us | 1.5 |\n| a\\|b | x |\n"
    );
}
