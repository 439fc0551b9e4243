//! The README's figures come from the current binary. Each generated region
//! sits between `<!-- generated: NAME -->` and `<!-- end generated -->`
//! lines; the tests here (and the validation test, for the tables built from
//! `moesim validate`'s rows) rebuild every region and fail when the README
//! differs. `scripts/update-readme.sh` runs the same tests with
//! `MOESIM_WRITE_README=1`, which rewrites the regions instead.
//!
//! Wall-clock figures (the speed tables) are measurements, not outputs, and
//! are not generated.

use std::path::PathBuf;
use std::sync::Mutex;

use moesim::validate::{Case, CaseResult};

use crate::common::*;

/// Serialises read-modify-write of README.md between tests.
static README: Mutex<()> = Mutex::new(());

fn readme_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")
}

fn begin(name: &str) -> String {
    format!("<!-- generated: {name} -->\n")
}
const END: &str = "<!-- end generated -->\n";

/// Checks region `name` of the README holds `content`; with
/// `MOESIM_WRITE_README` set, writes it there instead.
pub fn check_region(name: &str, content: &str) {
    let _guard = README.lock().unwrap_or_else(|e| e.into_inner());
    let path = readme_path();
    let text = std::fs::read_to_string(&path).expect("README.md is readable");
    let head = begin(name);
    let start = text.find(&head).unwrap_or_else(|| panic!("README.md has no region `{}`", head.trim())) + head.len();
    let end = start + text[start..].find(END).unwrap_or_else(|| panic!("region `{name}` has no end marker"));
    let current = &text[start..end];
    if std::env::var_os("MOESIM_WRITE_README").is_some() {
        if current != content {
            let updated = format!("{}{}{}", &text[..start], content, &text[end..]);
            std::fs::write(&path, updated).expect("README.md is writable");
            eprintln!("README.md: region `{name}` rewritten");
        }
        return;
    }
    if current != content {
        let first = current.lines().zip(content.lines()).position(|(a, b)| a != b);
        let line = |s: &str, i: Option<usize>| i.and_then(|i| s.lines().nth(i)).unwrap_or("(end)").to_owned();
        panic!(
            "README.md region `{name}` is stale (run scripts/update-readme.sh). First difference:\n  README: {}\n  binary: {}",
            line(current, first.or(Some(current.lines().count().min(content.lines().count())))),
            line(content, first.or(Some(current.lines().count().min(content.lines().count())))),
        );
    }
}

/// A markdown table from its header and rows.
pub fn table(header: &[&str], align: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n|{}|\n", header.join(" | "), align.join("|"));
    for r in rows {
        s.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    s
}

fn signed_pct(x: f64) -> String {
    format!("{:+.1} %", x).replace('-', "−")
}

/// The validation table and the DeepSeek headline table, from the rows the
/// validation test computed (so `moesim validate` runs once per test run).
pub fn check_validation_regions(cases: &[Case], results: &[CaseResult]) {
    let shown = |v: f64| {
        if v.abs() >= 100.0 || v == v.trunc() {
            format!("{v:.0}")
        } else {
            format!("{v:.3}")
        }
    };
    let rows: Vec<Vec<String>> = cases
        .iter()
        .zip(results)
        .map(|(case, r)| {
            let status = if case.known_gap().is_some() {
                "known gap"
            } else if r.skipped.is_some() {
                "skipped"
            } else if !r.pass {
                "FAIL"
            } else if r.fitted {
                "fitted"
            } else {
                "ok"
            };
            vec![
                r.case.clone(),
                format!("{} {}", shown(r.published), r.unit),
                r.simulated.map_or("—".into(), |s| format!("{s:.1}")),
                r.error_pct.map_or("—".into(), signed_pct),
                format!("±{:.0} %", r.tolerance_pct),
                status.into(),
            ]
        })
        .collect();
    check_region(
        "validation-table",
        &table(
            &["case", "published", "moesim", "error", "tolerance", "status"],
            &["---", "---:", "---:", "---:", "---:", "---"],
            &rows,
        ),
    );

    let local: Vec<Vec<String>> = cases
        .iter()
        .zip(results)
        .filter(|(c, _)| c.name.starts_with("ktransformers-v0.2-") || c.name.starts_with("llama.cpp-"))
        .filter(|(_, r)| r.unit == "tokens/s")
        .map(|(c, r)| {
            let status = if c.known_gap().is_some() {
                "known gap"
            } else if r.fitted {
                "fitted"
            } else if r.pass {
                "ok"
            } else {
                "FAIL"
            };
            vec![
                r.case.clone(),
                format!("{:.2}", r.published),
                r.simulated.map_or("—".into(), |s| format!("{s:.2}")),
                r.error_pct.map_or("—".into(), signed_pct),
                status.into(),
            ]
        })
        .collect();
    check_region(
        "local-table",
        &table(
            &["case", "published tokens/s", "moesim tokens/s", "error", "status"],
            &["---", "---:", "---:", "---:", "---"],
            &local,
        ),
    );

    let by_name =
        |name: &str| results.iter().find(|r| r.case == name).unwrap_or_else(|| panic!("no validation case {name}"));
    let headline = [
        ("H800 GPU-hours per trillion tokens (V3-TR §1)", "deepseek-v3-gpu-hours-per-trillion-tokens", 1e-3, "K"),
        (
            "one DualPipe F&B chunk pair, 4 MoE layers, EP64, 4,096 tokens (profile-data `train.json`, GPU time)",
            "deepseek-v3-profile-fb-chunk-pair-ms",
            1.0,
            " ms",
        ),
        ("training FLOPs per token (ISCA25 Table 2)", "deepseek-v3-training-gflop-per-token", 1.0, " GFLOP"),
        (
            "cross-node EP computation : communication (V3-TR §3.2.1)",
            "deepseek-v3-compute-to-ep-comm-ratio",
            1.0,
            " : 1",
        ),
    ];
    let rows: Vec<Vec<String>> = headline
        .iter()
        .map(|&(label, name, scale, unit)| {
            let r = by_name(name);
            let fmt =
                |v: f64| if unit == "K" { format!("{:.0}K", v * scale) } else { format!("{:.1}{unit}", v * scale) };
            let verdict = if r.known_gap.is_some() {
                format!("{}, known gap (see below)", r.error_pct.map_or("—".into(), signed_pct))
            } else {
                format!(
                    "{}, within ±{:.0} % (`{}`)",
                    r.error_pct.map_or("—".into(), signed_pct),
                    r.tolerance_pct,
                    r.case
                )
            };
            vec![label.into(), fmt(r.published), r.simulated.map_or("—".into(), fmt), verdict]
        })
        .collect();
    check_region(
        "deepseek-published",
        &table(&["figure", "published", "moesim", ""], &["---", "---:", "---:", "---"], &rows),
    );

    // ASTRA-sim's Chakra microbenchmarks: one moesim figure per trace
    // against both of ASTRA-sim's backends.
    let verdict = |name: &str| {
        let r = by_name(name);
        let status = if r.known_gap.is_some() {
            "known gap"
        } else if r.pass {
            "ok"
        } else {
            "FAIL"
        };
        format!("{} ({status})", r.error_pct.map_or("—".into(), signed_pct))
    };
    let rows: Vec<Vec<String>> = [
        ("Switch (8)", "all-reduce, ring", "allreduce-switch-ring"),
        ("Switch (8)", "all-reduce, direct", "allreduce-switch-direct"),
        ("Switch (8)", "all-to-all, direct", "alltoall-switch-direct"),
        ("Ring (8)", "all-reduce, ring", "allreduce-ring-ring"),
        ("Ring (8)", "all-to-all, direct (ASTRA: ring)", "alltoall-ring-direct"),
        ("FullyConnected (8)", "all-reduce, direct", "allreduce-fullyconnected-direct"),
        ("FullyConnected (8)", "all-to-all, direct", "alltoall-fullyconnected-direct"),
    ]
    .iter()
    .map(|&(network, label, stem)| {
        let (cu, ca) = (format!("chakra-astra-{stem}-cu"), format!("chakra-astra-{stem}-ca"));
        vec![
            network.to_owned(),
            label.to_owned(),
            by_name(&cu).simulated.map_or("—".into(), |s| format!("{s:.2}")),
            format!("{:.2}", by_name(&cu).published),
            verdict(&cu),
            format!("{:.2}", by_name(&ca).published),
            verdict(&ca),
        ]
    })
    .collect();
    check_region(
        "astra-chakra",
        &table(
            &["network", "trace, algorithm", "moesim, µs", "ASTRA CU, µs", "vs CU", "ASTRA CA, µs", "vs CA"],
            &["---", "---", "---:", "---:", "---:", "---:", "---:"],
            &rows,
        ),
    );
}

#[test]
fn readme_default_run_is_the_binary_output() {
    let o = moesim(&["run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Everything but the wall-clock lines.
    let text: String = stdout(&o)
        .lines()
        .filter(|l| !l.trim_start().starts_with("wall_s") && !l.contains(" s wall"))
        .map(|l| format!("{l}\n"))
        .collect();
    check_region(
        "default-run",
        &format!("```text\n$ moesim run            # = moesim run deepseek-v3-pretrain-2048xh800\n{text}```\n"),
    );
}

#[test]
fn readme_training_what_ifs_are_the_binary_output() {
    let overrides: &[(&str, &str)] = &[
        ("", "(default)"),
        ("topology.ib_gbit_per_s=200", "(half the InfiniBand)"),
        ("topology.ib_gbit_per_s=800", ""),
        ("parallel.comm_sms=8", ""),
        ("parallel.comm_sms=16", ""),
        ("parallel.comm_sms=32", ""),
        ("parallel.ep=32", ""),
        ("parallel.schedule=1f1b", ""),
        ("parallel.schedule=zb1p", ""),
        ("hardware.device=h100", ""),
        ("hardware.device=h20", ""),
        ("workload.skew=1.0", "(Zipf expert popularity)"),
        ("parallel.cp=2 parallel.dp=64", "(context parallelism: ring attention over 2 GPUs)"),
        ("hardware.device=ascend-910b", ""),
        ("hardware.device=b200", ""),
        ("hardware.device=gb200", ""),
        // A100 has no FP8 tensor cores: its row trains in BF16.
        ("hardware.device=a100 workload.precision=\"bf16\"", "(no FP8 on A100)"),
    ];
    let rows: Vec<Vec<String>> = overrides
        .iter()
        .map(|&(set, note)| {
            // Several overrides of one row are separated by spaces.
            let args: Vec<&str> = set.split_whitespace().flat_map(|s| ["--set", s]).collect();
            let v = run_json(&args);
            let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{set}: no {k}"));
            let label =
                if set.is_empty() { format!("`{note}`") } else { format!("`{set}` {note}").trim_end().to_owned() };
            let memory = if v["fits"] == true {
                format!("{:.1}", f("memory_gib_per_gpu"))
            } else {
                format!("{:.1} (does not fit {:.0} GiB)", f("memory_gib_per_gpu"), f("hbm_gib"))
            };
            vec![
                label,
                format!("{:.2}", f("step_time_s")),
                format!("{:.2}", f("exposed_comm_s")),
                format!("{:.2}", f("ep_exposed_s")),
                format!("{:.1} %", 100.0 * f("mfu_bf16_peak")),
                format!("{:.0}K", f("gpu_hours_per_trillion_tokens") / 1e3),
                memory,
            ]
        })
        .collect();
    check_region(
        "training-what-ifs",
        &table(
            &[
                "override",
                "step s",
                "exposed comm s",
                "exposed EP s",
                "MFU (BF16 peak)",
                "GPU-h / T tokens",
                "GiB / GPU",
            ],
            &["---", "---:", "---:", "---:", "---:", "---:", "---:"],
            &rows,
        ),
    );
}

/// HBM or LPDDR bytes as the memory tables print them.
fn bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else {
        format!("{:.0} MB", b / 1e6)
    }
}

/// The L2 size a rebuilt-L2 run reports in its notes (`... same area: 250.0 MiB`).
fn rebuilt_mib(v: &serde_json::Value) -> String {
    let notes =
        v["notes"].as_array().map(|n| n.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>()).unwrap_or_default();
    notes
        .iter()
        .find_map(|n| n.split("same area: ").nth(1))
        .and_then(|rest| rest.split(" MiB").next())
        .and_then(|m| m.parse::<f64>().ok())
        .map_or(String::new(), |m| format!(" {m:.0} MiB"))
}

#[test]
fn readme_memory_technology_tables_are_the_binary_output() {
    // H800: each op with its L2 as built (SRAM) and rebuilt in the same area.
    let ops: &[(&str, &[&str], &[&str])] = &[
        (
            "MLA decode, 128 seqs × 4096 tokens, 128 heads (FlashMLA shape)",
            &["flashmla-decode-h800"],
            &["sram", "edram", "stt-mram"],
        ),
        (
            "MLA decode, 16 heads (TP8, memory-bound)",
            &["flashmla-decode-h800", "--set", "workload.heads=16"],
            &["sram", "edram"],
        ),
        (
            "grouped masked GEMM, 4 experts × 256 rows, N=4096, K=7168 (decode)",
            &["grouped-gemm-masked-h800"],
            &["sram", "edram", "stt-mram"],
        ),
        (
            "grouped contiguous GEMM, 32 experts × 4096 rows, N=4096, K=7168 (prefill)",
            &[
                "grouped-gemm-masked-h800",
                "--set",
                "workload.layout=contiguous",
                "--set",
                "workload.groups=32",
                "--set",
                "workload.m=4096",
            ],
            &["sram", "edram"],
        ),
        ("dense GEMM 4096 × 7168 × 16384", &["gemm-h800"], &["sram", "edram"]),
    ];
    let name = |t: &str| match t {
        "sram" => "SRAM",
        "edram" => "eDRAM",
        _ => "STT-MRAM",
    };
    let mut rows = Vec::new();
    for (i, &(label, args, techs)) in ops.iter().enumerate() {
        for (j, &tech) in techs.iter().enumerate() {
            let mut a = args.to_vec();
            let set = format!("hardware.l2_rebuild_technology={tech}");
            if tech != "sram" {
                a.extend(["--set", &set]);
            }
            let v = run_json(&a);
            let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{a:?}: no {k}"));
            let l2 = match (i, tech) {
                (0, "sram") => format!("SRAM {:.0} MiB", 50.0),
                (0, _) => format!("{}{}", name(tech), rebuilt_mib(&v)),
                _ => name(tech).to_owned(),
            };
            rows.push(vec![
                if j == 0 { label.to_owned() } else { String::new() },
                l2,
                format!("{:.1}", f("kernel_us")),
                format!("{:.0}", f("tflops")),
                bytes(f("hbm_bytes")),
                v["bound"].as_str().unwrap_or("").to_owned(),
            ]);
        }
    }
    check_region(
        "memory-h800",
        &table(
            &["op (H800, FP8 GEMMs / BF16 attention)", "L2", "kernel µs", "TFLOP/s", "HBM bytes", "bound"],
            &["---", "---", "---:", "---:", "---:", "---"],
            &rows,
        ),
    );

    // The 310-style SoC: one FP16 GEMM with the L2 buffer enlarged or rebuilt.
    let base = [
        "gemm-ascend-910b",
        "--set",
        "hardware.device=ascend-310",
        "--set",
        "workload.m=1024",
        "--set",
        "workload.n=4096",
        "--set",
        "workload.k=4096",
        "--set",
        "workload.dtype=fp16",
    ];
    let variants: &[(&str, &str)] = &[
        ("", "8 MiB SRAM (as built)"),
        ("hardware.l2_mib=16", "16 MiB SRAM"),
        ("hardware.l2_mib=32", "32 MiB SRAM"),
        ("hardware.l2_mib=64", "64 MiB SRAM"),
        ("hardware.l2_rebuild_technology=edram", "8 MiB area rebuilt in eDRAM"),
        ("hardware.l2_rebuild_technology=stt-mram", "8 MiB area rebuilt in STT-MRAM"),
    ];
    let rows: Vec<Vec<String>> = variants
        .iter()
        .map(|&(set, label)| {
            let mut a = base.to_vec();
            if !set.is_empty() {
                a.extend(["--set", set]);
            }
            let v = run_json(&a);
            let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{a:?}: no {k}"));
            let mib = rebuilt_mib(&v);
            let label = if mib.is_empty() { label.to_owned() } else { format!("{label} ({})", mib.trim()) };
            vec![
                label,
                format!("{:.0}", f("kernel_us")),
                format!("{:.2}", f("tflops")),
                bytes(f("hbm_bytes")),
                v["bound"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    check_region(
        "memory-310",
        &table(
            &[
                "FP16 GEMM 1024 × 4096 × 4096 on the 310-style SoC (LPDDR4x 51.2 GB/s)",
                "kernel µs",
                "TFLOP/s",
                "LPDDR bytes",
                "bound",
            ],
            &["---", "---:", "---:", "---:", "---"],
            &rows,
        ),
    );
}
