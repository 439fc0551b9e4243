//! The writers on a small hand-made run.

use moesim_reports::window::{EventWindow, WindowRequest};
use moesim_reports::{resources, summary, timeline, trace};
use moesim_sim::*;

fn run() -> (TaskGraph, Platform, RunResult) {
    let mut p = Platform::default();
    p.add_device(DeviceResource { name: "gpu0".into(), units: 4, mem_bytes_per_s: 1e12 });
    p.add_link(LinkResource { name: "a->\"b\"".into(), bytes_per_s: 1e9, latency: SimDuration::ZERO });
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
    let (_, p, r) = run();
    let mut buf = Vec::new();
    resources::write_csv(&mut buf, &p, &r).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("kind,id,name,busy_us,utilization,unit_utilization,bytes"));
    // busy 1 of 2 us; units 2e6 unit-ps of 4 x 2e6 = 0.25.
    assert_eq!(lines[1], "device,0,gpu0,1.000000,0.500000,0.250000,0,0.000000,");
    // 1000 bytes over 2 us = 0.5 GB/s average, 1 GB/s peak.
    assert_eq!(lines[2], "link,0,\"a->\"\"b\"\"\",1.000000,0.500000,,1000,0.500000,1.000000");
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
