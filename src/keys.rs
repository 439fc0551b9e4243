//! The scenario format described from the structs that parse it: a JSON
//! Schema (`moesim keys --schema`, for editors) and the table of every key
//! with its type, unit, default and meaning (`moesim keys [KIND]`). Both
//! come from `schemars::JsonSchema` derived on the config structs, so a key
//! the parser accepts is listed and one it rejects is not; doc comments are
//! the meanings. Units follow the naming rule of ARCHITECTURE.md (a key's
//! suffix: `_s`, `_bytes`, `_gb_per_s`, ...), read back by [`unit_of`].
//!
//! The `[hardware]` and `[model]` tables are a preset name plus any of the
//! device's or model's keys (each optional: the preset supplies the rest);
//! the `[workload]` table is one of the registry's kinds, told apart by
//! `kind`.

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use moesim_models::{DeviceSpec, ModelConfig};

use crate::workloads::registry;

/// `[hardware]`: `device` plus any of the device's keys.
pub struct HardwareKeys;

impl JsonSchema for HardwareKeys {
    fn schema_name() -> Cow<'static, str> {
        "Hardware".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let names = DeviceSpec::preset_names().join(", ");
        preset_plus_overrides(
            DeviceSpec::json_schema(generator),
            "device",
            &format!("A device preset ({names}) or the path of a device file (*.toml, beside the scenario)."),
            "The device every GPU is: a preset, with any of its keys overridden beside `device`.",
        )
    }
}

/// `[model]`: `preset` plus any of the model's keys.
pub struct ModelKeys;

impl JsonSchema for ModelKeys {
    fn schema_name() -> Cow<'static, str> {
        "Model".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let names = ModelConfig::preset_names().join(", ");
        preset_plus_overrides(
            ModelConfig::json_schema(generator),
            "preset",
            &format!("A model preset ({names}) or the path of a model file (*.toml, beside the scenario)."),
            "The model: a preset, with any of its keys overridden beside `preset` (`[model.moe] topk = 4`).",
        )
    }
}

/// `[workload]`: one of the registry's kinds.
pub struct WorkloadKeys;

impl JsonSchema for WorkloadKeys {
    fn schema_name() -> Cow<'static, str> {
        "Workload".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let kinds: Vec<Value> = registry::KINDS.iter().map(|k| kind_schema(k, generator).to_value()).collect();
        json_schema!({
            "description": "What runs: `kind` picks the table's keys (`moesim keys KIND`).",
            "type": "object",
            "required": ["kind"],
            "oneOf": kinds,
        })
    }
}

/// One kind's `[workload]` table: its struct's schema with `kind` fixed.
fn kind_schema(kind: &registry::Kind, generator: &mut SchemaGenerator) -> Schema {
    let mut schema = (kind.schema)(generator);
    let props = schema.ensure_object().entry("properties").or_insert_with(|| json!({}));
    if let Some(props) = props.as_object_mut() {
        props.insert("kind".into(), json!({ "const": kind.name, "description": kind.about }));
    }
    schema.insert("title".into(), json!(format!("workload kind = \"{}\"", kind.name)));
    schema
}

/// A preset's schema with every key optional (recursively: nested tables
/// merge key by key) and the preset key required.
fn preset_plus_overrides(preset: Schema, key: &str, key_about: &str, about: &str) -> Schema {
    let mut value = preset.to_value();
    strip_required(&mut value);
    let obj = value.as_object_mut().expect("a struct's schema is an object");
    obj.remove("title");
    obj.insert("description".into(), json!(about));
    obj.insert("required".into(), json!([key]));
    let props = obj.entry("properties").or_insert_with(|| json!({}));
    if let Some(props) = props.as_object_mut() {
        let mut with_key = Map::new();
        with_key.insert(key.into(), json!({ "type": "string", "description": key_about }));
        with_key.extend(std::mem::take(props));
        *props = with_key;
    }
    Schema::try_from(value).expect("an object")
}

fn strip_required(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("required");
            m.values_mut().for_each(strip_required);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_required),
        _ => {}
    }
}

/// The JSON Schema of a scenario file, every subschema inline.
pub fn scenario_schema() -> Value {
    let generator = SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true).into_generator();
    let mut schema = generator.into_root_schema_for::<crate::scenario::ScenarioFile>().to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), json!("moesim scenario"));
        obj.insert(
            "description".into(),
            json!("A moesim scenario file (TOML). `moesim keys` lists these keys; `moesim scenarios show NAME` prints examples."),
        );
    }
    schema
}

/// One key of the scenario format.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KeyDoc {
    /// Dotted path, e.g. `topology.nodes` or `workload.prefill.gpus`.
    pub key: String,
    /// The workload kind it belongs to (`workload.*` keys only).
    pub kind: Option<String>,
    /// What it holds: `integer`, `number`, `string`, `boolean`, `array of
    /// string`, or the values allowed (`"ring" | "tree"`).
    pub value: String,
    /// From the key's suffix; empty when it has none.
    pub unit: String,
    /// Its default, `required`, or empty (optional, no fixed default).
    pub default: String,
    pub meaning: String,
}

/// Every key, in file order: top-level, hardware, topology, model,
/// parallel, then each kind's workload keys (`kind` restricts them to one).
pub fn keys(kind: Option<&str>) -> Vec<KeyDoc> {
    let schema = scenario_schema();
    let mut out = Vec::new();
    let top = &schema;
    let required = required_of(top);
    for (name, prop) in props_of(top) {
        if name == "workload" {
            for k in one_ofs(prop) {
                let Some(kname) = k.pointer("/properties/kind/const").and_then(Value::as_str) else { continue };
                if kind.is_some_and(|want| want != kname) {
                    continue;
                }
                walk(k, "workload", Some(kname), &mut out);
            }
        } else {
            walk_prop(name, prop, required.iter().any(|r| r == name), "", None, &mut out);
        }
    }
    out
}

fn walk(schema: &Value, prefix: &str, kind: Option<&str>, out: &mut Vec<KeyDoc>) {
    let required = required_of(schema);
    for (name, prop) in props_of(schema) {
        walk_prop(name, prop, required.iter().any(|r| r == name), prefix, kind, out);
    }
}

fn walk_prop(name: &str, prop: &Value, required: bool, prefix: &str, kind: Option<&str>, out: &mut Vec<KeyDoc>) {
    let key = if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") };
    let inner = non_null(prop);
    if inner.get("properties").is_some() {
        walk(inner, &key, kind, out);
        return;
    }
    let default = match prop.get("default") {
        Some(Value::Null) | None if required => "required".to_owned(),
        Some(Value::Null) | None => String::new(),
        Some(v) => toml_value(v),
    };
    let meaning = prop.get("description").or_else(|| inner.get("description")).and_then(Value::as_str).unwrap_or("");
    out.push(KeyDoc {
        key,
        kind: kind.map(str::to_owned),
        value: type_of(inner),
        unit: unit_of(name).to_owned(),
        default,
        meaning: meaning.split_whitespace().collect::<Vec<_>>().join(" "),
    });
}

fn props_of(schema: &Value) -> Vec<(&str, &Value)> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default()
}

fn required_of(schema: &Value) -> Vec<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn one_ofs(schema: &Value) -> Vec<&Value> {
    ["oneOf", "anyOf"].iter().filter_map(|k| schema.get(*k).and_then(Value::as_array)).flatten().collect()
}

/// `Option<T>`'s schema without its `null`.
fn non_null(schema: &Value) -> &Value {
    let alts: Vec<&Value> = one_ofs(schema).into_iter().filter(|s| s.get("type") != Some(&json!("null"))).collect();
    match alts.as_slice() {
        [one] => one,
        _ => schema,
    }
}

fn type_of(schema: &Value) -> String {
    if let Some(c) = schema.get("const") {
        return toml_value(c);
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        return e.iter().filter(|v| !v.is_null()).map(toml_value).collect::<Vec<_>>().join(" | ");
    }
    let alts = one_ofs(schema);
    if !alts.is_empty() {
        let mut names: Vec<String> = alts.iter().map(|a| type_of(a)).filter(|t| t != "null").collect();
        names.dedup();
        return names.join(" | ");
    }
    match schema.get("type") {
        Some(Value::String(t)) if t == "array" => {
            format!("array of {}", schema.get("items").map_or("values".to_owned(), type_of))
        }
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => {
            let names: Vec<&str> = ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect();
            if names == ["array"] {
                return format!("array of {}", schema.get("items").map_or("values".to_owned(), type_of));
            }
            names.join(" | ")
        }
        _ => "value".to_owned(),
    }
}

fn toml_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

/// A key's unit, read from its suffix (the naming rule every number that
/// leaves or enters moesim follows).
pub fn unit_of(key: &str) -> &'static str {
    const SUFFIXES: &[(&str, &str)] = &[
        ("_gbit_per_s", "Gb/s"),
        ("_tb_per_s", "TB/s"),
        ("_bytes_per_clk", "bytes/clock"),
        ("_per_clk_per_sm", "per clock per SM"),
        ("_kib_per_sm", "KiB per SM"),
        ("_tops", "TOP/s"),
        ("_gb_per_s", "GB/s"),
        ("_per_s", "per s"),
        ("_tflops", "TFLOP/s"),
        ("_ps", "ps"),
        ("_ns", "ns"),
        ("_us", "µs"),
        ("_ms", "ms"),
        ("_s", "s"),
        ("_bytes", "bytes"),
        ("_kib", "KiB"),
        ("_mib", "MiB"),
        ("_gib", "GiB"),
        ("_gb", "GB"),
        ("_mw", "mW"),
        ("_w", "W"),
        ("_watts", "W"),
        ("_mhz", "MHz"),
        ("_ghz", "GHz"),
        ("_usd", "USD"),
        ("_per_gpu_hour", "USD/GPU-hour"),
        ("_pj_per_byte", "pJ/byte"),
        ("_ratio", "fraction"),
        ("_utilization", "fraction"),
        ("_tokens", "tokens"),
        ("_len", "tokens"),
        ("_sms", "SMs"),
    ];
    let key = key.to_ascii_lowercase();
    SUFFIXES.iter().find(|(s, _)| key.ends_with(s) || key == s[1..]).map_or("", |(_, u)| u)
}

/// The key table as text, one key per line under a header per section.
pub fn render(keys: &[KeyDoc]) -> String {
    let w = |f: fn(&KeyDoc) -> usize| keys.iter().map(f).max().unwrap_or(0);
    let (wk, wv, wu, wd) = (
        w(|k| k.key.len()).max(3),
        w(|k| k.value.chars().count()).clamp(4, 40),
        w(|k| k.unit.chars().count()).max(4),
        w(|k| k.default.len()).clamp(7, 24),
    );
    let mut out = String::new();
    let mut section = String::new();
    for k in keys {
        let this = match (&k.kind, k.key.split_once('.')) {
            (Some(kind), _) => format!("[workload] kind = \"{kind}\""),
            (None, Some((table, _))) => format!("[{table}]"),
            (None, None) => "top level".to_owned(),
        };
        if this != section {
            if !section.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!(
                "{this}\n{:<wk$}  {:<wv$}  {:<wu$}  {:<wd$}  meaning\n",
                "key", "type", "unit", "default"
            ));
            section = this;
        }
        out.push_str(&format!(
            "{:<wk$}  {:<wv$}  {:<wu$}  {:<wd$}  {}\n",
            k.key, k.value, k.unit, k.default, k.meaning
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_come_from_the_key_suffix() {
        assert_eq!(unit_of("ib_gbit_per_s"), "Gb/s");
        assert_eq!(unit_of("nvlink_gb_per_s"), "GB/s");
        assert_eq!(unit_of("duration_s"), "s");
        assert_eq!(unit_of("chunk_bytes"), "bytes");
        assert_eq!(unit_of("ranks"), "");
    }
}
