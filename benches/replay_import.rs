//! Replay speed: a large Kineto trace built by repeating the events of
//! DeepSeek's `train.json` (times shifted by its span, correlation and
//! external ids offset so every repeat is its own work), imported (streamed
//! JSON) and replayed on its own hardware. Prints MB/s of import and engine
//! events/s of replay. Size: `MOESIM_BENCH_TRACE_MB` (default 1024).
//!
//! `cargo bench --bench replay_import` (needs ../shared/data).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use moesim::replay::recost::{Hardware, WhatIf};
use moesim_models::DeviceSpec;
use serde_json::Value;

fn main() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/deepseek-ai+profile-data/train.json");
    let Ok(text) = std::fs::read_to_string(&src) else {
        eprintln!("skipped: {} is not there", src.display());
        return;
    };
    let mb: f64 = std::env::var("MOESIM_BENCH_TRACE_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024.0);
    let doc: Value = serde_json::from_str(&text).expect("train.json parses");
    let events = doc["traceEvents"].as_array().expect("events");
    let span_us = 200_000i64;
    let id_step = 1_000_000i64;
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("replay-bench-trace.json");
    // Sized by the compact JSON written (train.json itself is indented).
    let written: usize = events.iter().map(|e| e.to_string().len() + 1).sum();
    let repeats = ((mb * 1e6) / written as f64).ceil().max(1.0) as i64;
    {
        let mut w = BufWriter::new(std::fs::File::create(&path).expect("scratch file"));
        write!(w, "{{\"deviceProperties\":{},\"traceEvents\":[", doc["deviceProperties"]).unwrap();
        let mut first = true;
        for k in 0..repeats {
            for e in events {
                let mut e = e.clone();
                if let Some(ts) = e.get("ts").and_then(Value::as_i64) {
                    e["ts"] = Value::from(ts + k * span_us);
                }
                if let Some(id) = e.get("id").and_then(Value::as_i64) {
                    e["id"] = Value::from(id + k * id_step);
                }
                if let Some(args) = e.get_mut("args").and_then(Value::as_object_mut) {
                    for key in ["correlation", "External id"] {
                        if let Some(v) = args.get(key).and_then(Value::as_i64) {
                            args.insert(key.into(), Value::from(v + k * id_step));
                        }
                    }
                }
                if !first {
                    w.write_all(b",").unwrap();
                }
                first = false;
                serde_json::to_writer(&mut w, &e).unwrap();
            }
        }
        w.write_all(b"]}").unwrap();
    }
    let bytes = std::fs::metadata(&path).unwrap().len() as f64;
    let t0 = Instant::now();
    let rank = moesim::replay::import(&path, 0).expect("imports");
    let import_s = t0.elapsed().as_secs_f64();
    let h800 = DeviceSpec::preset("h800").unwrap();
    let hw = Hardware {
        nic_bytes_per_s: h800.nic_gbit_per_s * 1e9 / 8.0,
        nvlink_bytes_per_s: h800.nvlink_gb_per_s * 1e9,
        device: h800,
        comm_sms: None,
    };
    let whatif = WhatIf { source: hw.clone(), target: hw };
    let t1 = Instant::now();
    let run =
        moesim::replay::replay(std::slice::from_ref(&rank), &whatif, None, &Default::default(), &mut moesim_sim::Quiet)
            .unwrap_or_else(|_| panic!("replays"));
    let replay_s = t1.elapsed().as_secs_f64();
    println!(
        "replay_import: {:.0} MB ({} repeats, {} events, {} GPU ops) imported in {:.2} s = {:.1} MB/s; replayed {} tasks \
         ({} engine events) in {:.2} s = {:.3e} events/s; span {:.1} ms",
        bytes / 1e6,
        repeats,
        rank.total_events,
        rank.ops.len(),
        import_s,
        bytes / 1e6 / import_s,
        run.lowered.graph.task_count(),
        run.result.events,
        replay_s,
        run.result.events as f64 / replay_s,
        run.result.end.as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_file(&path);
}
