//! What `--out` holds for a planner: provenance in `summary.json`, a
//! `scenario.resolved.toml` that reproduces the run, a gzip trace cut to a
//! window, and `moesim report`'s HTML page (rendered in headless Chromium
//! when it is installed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const SMALL_EP: [&str; 5] = ["deepep-dispatch-ep64", "--set", "topology.nodes=2", "--set", "workload.ranks=16"];

fn run_out(args: &[&str], out: &Path) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", out.to_str().unwrap()]);
    let o = moesim(&all);
    assert!(o.status.success(), "moesim {all:?}: {}", stderr(&o));
}

fn summary(dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn the_resolved_scenario_reproduces_the_run_without_presets_or_overrides() {
    let dir = scratch("outputs_resolved");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let mut args = SMALL_EP.to_vec();
    args.extend_from_slice(&["--set", "workload.comm_sms=24", "--set", "hardware.nvlink_gb_per_s=180"]);
    run_out(&args, &a);
    let resolved = a.join("scenario.resolved.toml");
    let text = std::fs::read_to_string(&resolved).unwrap();
    // Written out in full: the device's and topology's preset values are there.
    assert!(text.contains("hbm_tb_per_s = 3.35") && text.contains("nvlink_gb_per_s = 180.0"), "{text}");
    assert!(text.contains("nvlink_efficiency = ") && text.contains("comm_sms = 24"), "{text}");
    run_out(&[resolved.to_str().unwrap()], &b);
    for f in ["timeline.csv", "resources.csv", "trace.json.gz"] {
        assert!(std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    let (mut sa, mut sb) = (summary(&a), summary(&b));
    let pa = sa.remove("provenance").unwrap();
    let pb = sb.remove("provenance").unwrap();
    assert_eq!(
        pa["overrides"],
        serde_json::json!([
            "topology.nodes=2",
            "workload.ranks=16",
            "workload.comm_sms=24",
            "hardware.nvlink_gb_per_s=180"
        ])
    );
    assert_eq!(pb["overrides"], serde_json::json!([]));
    for k in ["moesim_version", "git_commit", "device", "topology", "model", "plan", "seed"] {
        assert_eq!(pa[k], pb[k], "provenance.{k}");
    }
    assert_eq!(pa["device"], "h800");
    assert_eq!(pa["topology"], "h800-cluster (2 nodes x 8 GPUs)");
    assert!(!pa["git_commit"].as_str().unwrap().is_empty());
    // The link-rate notes say where each rate came from: a preset in the
    // first run, the (resolved) scenario in the second. Everything else is equal.
    let strip = |s: &mut serde_json::Map<String, serde_json::Value>| {
        if let Some(serde_json::Value::Array(notes)) = s.get_mut("notes") {
            notes.retain(|n| !n.as_str().unwrap_or("").starts_with("link rate:"));
        }
    };
    strip(&mut sa);
    strip(&mut sb);
    assert_eq!(sa, sb);
}

#[test]
fn a_device_from_a_file_is_written_inline() {
    let dir = scratch("outputs_inline");
    let device = std::fs::read_to_string("models/presets/devices/h800.toml").unwrap().replace("\"h800\"", "\"my-gpu\"");
    std::fs::write(dir.join("my-gpu.toml"), device).unwrap();
    let scenario = ALLREDUCE.replace("device = \"h800\"", "device = \"my-gpu.toml\"");
    std::fs::write(dir.join("s.toml"), scenario).unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    run_out(&[dir.join("s.toml").to_str().unwrap()], &a);
    std::fs::remove_file(dir.join("my-gpu.toml")).unwrap();
    let text = std::fs::read_to_string(a.join("scenario.resolved.toml")).unwrap();
    assert!(text.contains("device = \"inline\"") && text.contains("name = \"my-gpu\""), "{text}");
    run_out(&[a.join("scenario.resolved.toml").to_str().unwrap()], &b);
    assert_eq!(summary(&b)["provenance"]["device"], "my-gpu");
    assert!(std::fs::read(a.join("timeline.csv")).unwrap() == std::fs::read(b.join("timeline.csv")).unwrap());
}

fn gunzip(path: &Path) -> String {
    use std::io::Read;
    let bytes = std::fs::read(path).unwrap();
    // No file name (FLG.FNAME) and no time (MTIME = 0) in the header.
    assert_eq!(&bytes[..3], &[0x1f, 0x8b, 8]);
    assert_eq!(bytes[3] & 0x08, 0, "no file name in the gzip header");
    assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "mtime 0");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap();
    text
}

#[test]
fn the_trace_window_cuts_the_trace_and_timeline_and_the_summary_says_so() {
    let dir = scratch("outputs_window");
    let (all, cut) = (dir.join("all"), dir.join("cut"));
    run_out(&["allreduce-8xh800"], &all);
    let total = summary(&all)["trace_window"]["tasks_total"].as_u64().unwrap();
    assert_eq!(summary(&all)["trace_window"]["tasks_left_out"], 0);
    run_out(&["allreduce-8xh800", "--trace-window", "1ms..2ms"], &cut);
    let s = summary(&cut);
    let w = &s["trace_window"];
    let written = w["tasks_written"].as_u64().unwrap();
    assert!(written > 0 && written < total, "{w}");
    assert_eq!(w["tasks_left_out"].as_u64().unwrap(), total - written);
    let note =
        s["notes"].as_array().unwrap().iter().filter_map(|n| n.as_str()).find(|n| n.starts_with("trace.json.gz"));
    assert!(note.is_some_and(|n| n.contains("left out") && n.contains("--trace-window")), "{note:?}");
    let timeline = std::fs::read_to_string(cut.join("timeline.csv")).unwrap();
    assert_eq!(timeline.lines().count() as u64, written + 1);
    for line in timeline.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (start, end): (f64, f64) = (f[6].parse().unwrap(), f[7].parse().unwrap());
        assert!(start < 2000.0 && end > 1000.0, "{line} overlaps 1..2 ms");
    }
    let trace: serde_json::Value = serde_json::from_str(&gunzip(&cut.join("trace.json.gz"))).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    assert_eq!(events.iter().filter(|e| e["ph"] == "X").count() as u64, written);
    for e in events.iter().filter(|e| e["ph"] == "C") {
        let ts = e["ts"].as_f64().unwrap();
        assert!((1000.0..2000.0).contains(&ts), "counter at {ts} us is in the window");
    }
    for bad in ["2ms..1ms", "1..x", "5furlongs..6", "10"] {
        let o = moesim(&["run", "allreduce-8xh800", "--trace-window", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(stderr(&o).contains("--trace-window"), "{bad}: {}", stderr(&o));
    }
}

/// Chromium, or why the test cannot use it.
fn chromium() -> Result<PathBuf, String> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(o) = Command::new("which").arg(name).output() {
            let p = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if o.status.success() && !p.is_empty() {
                return Ok(PathBuf::from(p));
            }
        }
    }
    Err("no chromium, chromium-browser or google-chrome on PATH (Debian: apt-get install chromium)".into())
}

/// Runs headless Chromium with `args` and a fresh profile; its stdout and
/// stderr (through files, so a chatty log cannot fill a pipe and stall it),
/// or a panic after two minutes.
fn headless(chromium: &Path, profile: &Path, args: &[&str]) -> (String, String) {
    std::fs::create_dir_all(profile).unwrap();
    let (out, err) = (profile.join("stdout.txt"), profile.join("stderr.txt"));
    let mut child = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("chromium starts");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    (read(&out), read(&err))
}

#[test]
fn the_report_is_self_contained_and_renders_in_headless_chromium() {
    let dir = scratch("outputs_report");
    let (train, ep) = (dir.join("train"), dir.join("ep"));
    run_out(
        &[
            "deepseek-v3-chunk-256xh800",
            "--set",
            "model.layers=4",
            "--set",
            "parallel.pp=2",
            "--set",
            "topology.nodes=16",
            "--set",
            "workload.global_batch=256",
        ],
        &train,
    );
    run_out(&SMALL_EP, &ep);
    let html_path = dir.join("report.html");
    let o = moesim(&["report", train.to_str().unwrap(), ep.to_str().unwrap(), "-o", html_path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&html_path).unwrap();
    // Self-contained: nothing to fetch.
    for needle in ["src=", "href=", "url(", "@import", "<link", "<script"] {
        assert!(!html.contains(needle), "the report holds `{needle}`");
    }
    let svgs = html.matches("<svg").count();
    assert!(svgs >= 3, "{svgs} inline figures");
    for want in
        ["Comparison", "Provenance", "Notes and assumptions", "Validation", "scenario.resolved.toml", "git_commit"]
    {
        assert!(html.contains(want), "the report shows {want}");
    }
    // A run folder that is not one is refused with exit 2.
    let o = moesim(&["report", dir.to_str().unwrap(), "-o", dir.join("x.html").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("summary.json"), "{}", stderr(&o));

    let chromium = match chromium() {
        Ok(c) => c,
        Err(why) => {
            eprintln!("skipped: rendering the report in headless Chromium: {why}");
            return;
        }
    };
    // Every image and inline SVG rendered: a probe script at the end of a
    // copy of the page records each one's size into the DOM.
    let probe = "<script>(function(){var imgs=Array.prototype.map.call(document.images,function(i){return i.complete&&i.naturalWidth>0});\
        var svgs=Array.prototype.map.call(document.querySelectorAll('svg'),function(s){var b=s.getBBox();return b.width>0&&b.height>0});\
        var p=document.createElement('pre');p.id='probe';p.textContent=JSON.stringify({imgs:imgs,svgs:svgs});\
        document.body.appendChild(p);})();</script></body>";
    let probed = dir.join("probe.html");
    std::fs::write(&probed, html.replace("</body>", probe)).unwrap();
    let url = |p: &Path| format!("file://{}", p.canonicalize().unwrap().display());
    let (dom, _) = headless(&chromium, &dir.join("profile1"), &["--dump-dom", &url(&probed)]);
    let at = dom.find("<pre id=\"probe\">").expect("the probe ran");
    let json = &dom[at + "<pre id=\"probe\">".len()..];
    let json: serde_json::Value = serde_json::from_str(&json[..json.find('<').unwrap()]).unwrap();
    let rendered: Vec<bool> = json["svgs"].as_array().unwrap().iter().map(|b| b.as_bool().unwrap()).collect();
    assert_eq!(rendered.len(), svgs, "{json}");
    assert!(rendered.iter().all(|&r| r), "every SVG has a size: {json}");
    assert!(json["imgs"].as_array().unwrap().iter().all(|b| b == true), "{json}");

    // No console message (the page has no script, so any is an error), and a
    // screenshot that is not blank.
    let shot = dir.join("shot.png");
    let (_, log) = headless(
        &chromium,
        &dir.join("profile2"),
        &["--window-size=1280,1600", &format!("--screenshot={}", shot.display()), &url(&html_path)],
    );
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let img = image::open(&shot).expect("a PNG screenshot").to_rgb8();
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() > 16, "the screenshot has {} colours: blank", colours.len());
}
