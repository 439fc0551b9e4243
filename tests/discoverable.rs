//! Discoverable: every CLI argument and command has help, every `--help`
//! example runs as written, completions are generated, and `moesim keys`
//! / `--schema` describe exactly the keys the parser accepts.

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use serde_json::Value;

use crate::common::{moesim, scratch, stderr, stdout};
use moesim::commands::cli::Cli;

/// Every (command path, command) of the tree.
fn commands() -> Vec<(String, clap::Command)> {
    fn walk(prefix: &str, c: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        let path = if prefix.is_empty() { c.get_name().to_owned() } else { format!("{prefix} {}", c.get_name()) };
        out.push((path.clone(), c.clone()));
        for sub in c.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(&path, sub, out);
        }
    }
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk("", &cmd, &mut out);
    out
}

#[test]
fn every_command_and_argument_has_help() {
    let mut missing = Vec::new();
    for (path, c) in commands() {
        if c.get_about().is_none_or(|a| a.to_string().trim().is_empty()) {
            missing.push(format!("{path}: the command"));
        }
        for a in c.get_arguments() {
            let id = a.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if a.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                missing.push(format!("{path}: {id}"));
            }
        }
    }
    assert!(missing.is_empty(), "without help text: {missing:#?}");
}

/// The `moesim ...` lines of every command's `after_help`.
fn examples() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for (path, c) in commands() {
        let Some(after) = c.get_after_help() else { continue };
        for line in after.to_string().lines() {
            if let Some(rest) = line.trim_start().strip_prefix("moesim ") {
                out.push((path.clone(), rest.split_whitespace().map(str::to_owned).collect()));
            }
        }
    }
    out
}

#[test]
fn help_examples_run_as_written() {
    let examples = examples();
    // Every main command shows at least one example.
    let with: BTreeSet<String> = examples.iter().map(|(p, _)| p.clone()).collect();
    for c in ["run", "scenarios", "keys", "topology", "plan", "sweep", "replay", "validate", "completions"] {
        assert!(with.contains(&format!("moesim {c}")), "moesim {c} --help shows no example");
    }
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    let scratch_dir = scratch("help-examples");
    for (_, args) in &examples {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        // Every example parses; validate runs every case (tested elsewhere).
        let parsed = Cli::try_parse_from_args(&refs);
        assert!(parsed.is_ok(), "moesim {}: {}", args.join(" "), parsed.err().unwrap());
        if args[0] == "validate" || (args.iter().any(|a| a.contains("shared/data")) && !data.exists()) {
            continue;
        }
        // From the project root, as the README's examples; those that write
        // files (`--out`, `-o`) in a scratch folder, one for all so a later
        // example reads what an earlier one wrote.
        let writes = args.iter().any(|a| a == "--out" || a == "-o");
        let o = if writes {
            std::process::Command::new(env!("CARGO_BIN_EXE_moesim"))
                .args(&refs)
                .current_dir(&scratch_dir)
                .output()
                .expect("moesim runs")
        } else {
            moesim(&refs)
        };
        assert!(o.status.success(), "moesim {} failed: {}", args.join(" "), stderr(&o));
        assert!(!o.stdout.is_empty(), "moesim {} printed nothing", args.join(" "));
    }
}

trait TryParse {
    fn try_parse_from_args(args: &[&str]) -> Result<Cli, clap::Error>;
}
impl TryParse for Cli {
    fn try_parse_from_args(args: &[&str]) -> Result<Cli, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("moesim").chain(args.iter().copied()))
    }
}

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef moesim"), ("fish", "complete -c moesim")] {
        let o = moesim(&["completions", shell]);
        assert!(o.status.success(), "{}", stderr(&o));
        let s = stdout(&o);
        assert!(s.contains(marker) && s.contains("scenarios") && s.contains("allow-skip"), "{shell}: {s:.200}");
    }
    let o = moesim(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
}

/// The dotted keys of a TOML table, leaves only (arrays are leaves).
fn toml_keys(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
    for (k, v) in t {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(inner) => toml_keys(&key, inner, out),
            _ => out.push(key),
        }
    }
}

fn listed(kind: &str) -> BTreeSet<String> {
    moesim::keys::keys(Some(kind)).into_iter().map(|k| k.key).collect()
}

#[test]
fn every_key_of_every_built_in_is_listed_for_its_kind() {
    for (name, text) in moesim::builtin::SCENARIOS {
        let table: toml::Table = toml::from_str(text).unwrap();
        let kind = table["workload"]["kind"].as_str().unwrap();
        let keys = listed(kind);
        let mut used = Vec::new();
        toml_keys("", &table, &mut used);
        for k in used {
            assert!(keys.contains(&k), "{name}: `{k}` is not in `moesim keys {kind}`");
        }
    }
}

/// Every listed key is one the parser knows: set to a value of no type any
/// key takes, the scenario is refused for its value, never as an unknown
/// key. A key not listed is refused as unknown.
#[test]
fn every_listed_key_is_accepted_by_the_parser_and_no_other() {
    let mut kinds_seen = BTreeSet::new();
    for (name, text) in moesim::builtin::SCENARIOS {
        let table: toml::Table = toml::from_str(text).unwrap();
        let kind = table["workload"]["kind"].as_str().unwrap().to_owned();
        if !kinds_seen.insert(kind.clone()) {
            continue;
        }
        for k in moesim::keys::keys(Some(&kind)) {
            if k.key == "workload.kind" || (k.key.starts_with("model.") && !table.contains_key("model")) {
                continue;
            }
            let source = moesim::diagnostics::Source::new(format!("builtin:{name}"), *text);
            let set = format!("{}=[[[1]]]", k.key);
            if let Err(e) = moesim::load_source(source, std::slice::from_ref(&set)) {
                let msg = e.to_string();
                assert!(!msg.contains("unknown"), "{name}: --set {set} is refused as unknown: {msg}");
            }
        }
        for bogus in ["workload.no_such_key", "topology.no_such_key", "parallel.no_such_key", "no_such_key"] {
            if bogus.starts_with("topology") && !table.contains_key("topology") {
                continue;
            }
            let set = format!("{bogus}=1");
            let source = moesim::diagnostics::Source::new(format!("builtin:{name}"), *text);
            let e = moesim::load_source(source, &[set]).expect_err("an unknown key is refused").to_string();
            assert!(e.contains("unknown"), "{name}: {bogus}: {e}");
            assert!(!listed(&kind).contains(bogus), "{bogus} is listed");
        }
    }
    assert!(kinds_seen.len() >= 8, "built-ins cover only {kinds_seen:?}");
}

#[test]
fn keys_and_schema_from_the_command_line() {
    let o = moesim(&["keys", "serving"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("[workload] kind = \"serving\"") && !out.contains("kind = \"collective\""), "{out}");
    let line = out.lines().find(|l| l.starts_with("topology.ib_gbit_per_s ")).expect("a topology key");
    assert!(line.contains("number") && line.contains("Gb/s"), "{line}");
    let line = out.lines().find(|l| l.starts_with("parallel.comm_sms ")).expect("a parallel key");
    assert!(line.contains(" 20 "), "the default: {line}");
    let o = moesim(&["keys", "nonsense"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected a workload kind (collective"), "{}", stderr(&o));
    let o = moesim(&["keys", "--schema"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let schema: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["properties"]["hardware"]["required"], serde_json::json!(["device"]));
    let kinds = schema["properties"]["workload"]["oneOf"].as_array().unwrap();
    assert_eq!(kinds.len(), moesim::workloads::registry::KINDS.len());
    assert!(kinds.iter().all(|k| k["additionalProperties"] == false), "deny_unknown_fields in every kind");
}
