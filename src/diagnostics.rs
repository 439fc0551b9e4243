//! Where a bad value came from: scenario sources (a file or a built-in, with
//! `--set` overrides applied) and compiler-style diagnostics that name the
//! file, line and column (or the `--set` that introduced the value), the key
//! path and what was expected.

use std::fmt;
use std::ops::Range;

use toml_edit::{DocumentMut, ImDocument, Item, Table};

/// A scenario's text as loaded, and after `--set` overrides.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as the user gave it, or `builtin:NAME`.
    pub origin: String,
    /// The text after overrides (what is parsed).
    pub text: String,
    /// For each line of `text`, the 0-based line of the original it came
    /// from, or `None` for a line an override wrote.
    line_map: Vec<Option<usize>>,
    /// `(dotted key, value as typed)` of every override.
    sets: Vec<(String, String)>,
}

/// Where a value sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// 1-based line and column in the original file.
    File {
        line: usize,
        col: usize,
    },
    /// A value given with `--set KEY=VALUE`.
    Set {
        key: String,
        value: String,
    },
    Unknown,
}

/// One problem with the input, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub origin: String,
    pub location: Location,
    /// Dotted key path, when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::File { line, col } => write!(f, "{}:{line}:{col}: ", self.origin)?,
            Location::Set { key, value } => write!(f, "{}: --set {key}={value}: ", self.origin)?,
            Location::Unknown => write!(f, "{}: ", self.origin)?,
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl Source {
    /// A source with no overrides.
    pub fn new(origin: impl Into<String>, text: impl Into<String>) -> Source {
        let text = text.into();
        let line_map = (0..text.lines().count().max(1)).map(Some).collect();
        Source { origin: origin.into(), text, line_map, sets: Vec::new() }
    }

    /// The `--set` overrides applied, as `(key, value)` in the order given.
    pub fn overrides(&self) -> &[(String, String)] {
        &self.sets
    }

    /// Applies `KEY=VALUE` overrides (dotted keys; a value that is not valid
    /// TOML is taken as a string). Tables along the path are created.
    pub fn with_overrides(self, sets: &[String]) -> Result<Source, Vec<Diagnostic>> {
        if sets.is_empty() {
            return Ok(self);
        }
        let mut doc: DocumentMut = match self.text.parse() {
            Ok(d) => d,
            Err(e) => return Err(vec![self.toml_error(e.span(), e.message())]),
        };
        let mut applied = Vec::new();
        let mut problems = Vec::new();
        for set in sets {
            let Some((key, raw)) = set.split_once('=') else {
                problems.push(self.plain(format!("--set {set}: expected KEY=VALUE, e.g. --set workload.ranks=16")));
                continue;
            };
            let (key, raw) = (key.trim(), raw.trim());
            let parts: Vec<&str> = key.split('.').collect();
            if parts.iter().any(|p| p.is_empty()) {
                problems.push(self.plain(format!("--set {set}: `{key}` is not a dotted key path")));
                continue;
            }
            let value: toml_edit::Value = raw.parse().unwrap_or_else(|_| toml_edit::Value::from(raw));
            if let Err(msg) = set_path(doc.as_table_mut(), &parts, value) {
                problems.push(self.plain(format!("--set {set}: {msg}")));
                continue;
            }
            applied.push((key.to_owned(), raw.to_owned()));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let text = doc.to_string();
        let mut out = Source { origin: self.origin.clone(), text, line_map: Vec::new(), sets: applied };
        out.line_map = out.map_lines(&self.text);
        Ok(out)
    }

    /// This source with the value at `dotted` removed (a leaf value, not a
    /// table), its lines still located in the original file: how parsing
    /// goes on past a value of the wrong type or an unknown key to report
    /// the file's other problems. `None` if there is no such value.
    pub fn without_key(&self, dotted: &str) -> Option<Source> {
        let mut doc: DocumentMut = self.text.parse().ok()?;
        let parts: Vec<&str> = dotted.split('.').collect();
        let (last, head) = parts.split_last()?;
        let mut item: &mut Item = doc.as_item_mut();
        for p in head {
            item = item.get_mut(*p)?;
        }
        let removed = match item {
            Item::Table(t) if matches!(t.get(last), Some(Item::Value(v)) if !v.is_inline_table()) => t.remove(last),
            Item::Value(toml_edit::Value::InlineTable(t)) if t.get(last).is_some_and(|v| !v.is_inline_table()) => {
                t.remove(last).map(Item::Value)
            }
            _ => None,
        };
        removed?;
        let text = doc.to_string();
        let line_map = match_lines(&self.text, &text)
            .into_iter()
            .map(|old| old.and_then(|i| self.line_map.get(i).copied().flatten()))
            .collect();
        Some(Source { origin: self.origin.clone(), text, line_map, sets: self.sets.clone() })
    }

    /// Maps each line of the edited text to the original line it equals,
    /// skipping lines that hold overridden values.
    fn map_lines(&self, original: &str) -> Vec<Option<usize>> {
        let set_lines: Vec<usize> = self
            .sets
            .iter()
            .filter_map(|(k, _)| self.value_span(k))
            .flat_map(|r| {
                let a = line_of(&self.text, r.start);
                let b = line_of(&self.text, r.end.saturating_sub(1).max(r.start));
                a..=b
            })
            .collect();
        match_lines_skipping(original, &self.text, |j| set_lines.contains(&j))
    }

    fn value_span(&self, dotted: &str) -> Option<Range<usize>> {
        let doc = ImDocument::parse(self.text.clone()).ok()?;
        let mut item: &Item = doc.as_item();
        for part in dotted.split('.') {
            item = item.get(part)?;
        }
        item.span()
    }

    /// The location of a byte offset of the (edited) text.
    pub fn locate_offset(&self, offset: usize) -> Location {
        let line = line_of(&self.text, offset);
        if let Some(Some(orig)) = self.line_map.get(line) {
            let line_start = self.text[..offset.min(self.text.len())].rfind('\n').map_or(0, |p| p + 1);
            let col = self.text[line_start..offset.min(self.text.len())].chars().count() + 1;
            return Location::File { line: orig + 1, col };
        }
        for (key, value) in &self.sets {
            if let Some(r) = self.value_span(key) {
                if line_of(&self.text, r.start) <= line && line <= line_of(&self.text, r.end.saturating_sub(1)) {
                    return Location::Set { key: key.clone(), value: value.clone() };
                }
            }
        }
        Location::Unknown
    }

    /// The location of a dotted key's value; if the key is absent, of the
    /// nearest enclosing table that exists.
    pub fn locate_key(&self, dotted: &str) -> Location {
        if let Some((key, value)) = self.sets.iter().find(|(k, _)| k == dotted) {
            return Location::Set { key: key.clone(), value: value.clone() };
        }
        let Ok(doc) = ImDocument::parse(self.text.clone()) else { return Location::Unknown };
        let mut item: &Item = doc.as_item();
        let mut best: Option<Range<usize>> = None;
        // A part may index an array of tables: `link[3]` (0-based).
        let steps = dotted.split('.').flat_map(|part| match part.strip_suffix(']').and_then(|p| p.split_once('[')) {
            Some((name, i)) => [Some(Step::Key(name)), i.parse().ok().map(Step::Index)],
            None => [Some(Step::Key(part)), None],
        });
        for step in steps.flatten() {
            let next = match step {
                Step::Key(k) => item.get(k),
                Step::Index(i) => item.get(i),
            };
            match next {
                Some(next) => {
                    item = next;
                    // A table of an array of tables has no span of its own:
                    // take its first key's.
                    let span = item.span().or_else(|| {
                        item.as_table()
                            .and_then(|t| t.iter().next())
                            .and_then(|(k, _)| item.as_table().and_then(|t| t.key(k)).and_then(|key| key.span()))
                    });
                    if let Some(s) = span {
                        best = Some(s);
                    }
                }
                None => break,
            }
        }
        match best {
            Some(r) => self.locate_offset(r.start),
            None => Location::Unknown,
        }
    }

    /// The dotted key whose key or value covers `offset`, if any.
    pub fn key_at_offset(&self, offset: usize) -> Option<String> {
        let doc = ImDocument::parse(self.text.clone()).ok()?;
        let mut path = Vec::new();
        key_at(doc.as_table(), offset, &mut path);
        (!path.is_empty()).then(|| path.join("."))
    }

    /// A diagnostic for a TOML parse or deserialisation error.
    pub fn toml_error(&self, span: Option<Range<usize>>, message: &str) -> Diagnostic {
        let message = message.trim().replace('\n', " ");
        match span {
            Some(r) => Diagnostic {
                origin: self.origin.clone(),
                location: self.locate_offset(r.start),
                key: self.key_at_offset(r.start),
                message,
            },
            None => self.plain(message),
        }
    }

    /// A diagnostic about a key path (a value found impossible after parsing).
    pub fn at_key(&self, key: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            origin: self.origin.clone(),
            location: self.locate_key(key),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }

    /// A diagnostic about the source as a whole.
    pub fn plain(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic { origin: self.origin.clone(), location: Location::Unknown, key: None, message: message.into() }
    }
}

/// For each line of `edited`, the line of `original` it equals, matched in
/// order (lines an edit wrote match nothing).
fn match_lines(original: &str, edited: &str) -> Vec<Option<usize>> {
    match_lines_skipping(original, edited, |_| false)
}

/// As [`match_lines`], with the edited lines `skip` names matching nothing.
fn match_lines_skipping(original: &str, edited: &str, skip: impl Fn(usize) -> bool) -> Vec<Option<usize>> {
    let orig: Vec<&str> = original.lines().collect();
    let mut i = 0;
    edited
        .lines()
        .enumerate()
        .map(|(j, line)| {
            if skip(j) {
                return None;
            }
            let start = i;
            while i < orig.len() && orig[i] != line {
                i += 1;
            }
            if i < orig.len() {
                i += 1;
                Some(i - 1)
            } else {
                i = start;
                None
            }
        })
        .collect()
}

/// One step of a key path: a table key or an index into an array of tables.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count()
}

fn key_at(table: &Table, offset: usize, path: &mut Vec<String>) {
    for (k, item) in table.iter() {
        let in_key = table.key(k).and_then(|key| key.span()).is_some_and(|r| r.contains(&offset));
        let in_value = item.span().is_some_and(|r| r.contains(&offset) || r.end == offset);
        if in_key || in_value {
            path.push(k.to_owned());
            if let Some(t) = item.as_table() {
                key_at(t, offset, path);
            } else if let Some(t) = item.as_inline_table() {
                for (k2, v2) in t.iter() {
                    if v2.span().is_some_and(|r| r.contains(&offset)) {
                        path.push(k2.to_owned());
                        break;
                    }
                }
            }
            return;
        }
    }
}

fn set_path(table: &mut Table, parts: &[&str], value: toml_edit::Value) -> Result<(), String> {
    let (last, head) = parts.split_last().expect("non-empty path");
    let mut t = table;
    for p in head {
        let entry = t.entry(p).or_insert_with(|| Item::Table(Table::new()));
        t = match entry {
            Item::Table(tab) => tab,
            _ => return Err(format!("`{p}` is a value, not a table")),
        };
    }
    match t.get_mut(last) {
        Some(Item::Value(v)) => {
            let decor = v.decor().clone();
            *v = value;
            *v.decor_mut() = decor;
        }
        Some(Item::Table(_)) | Some(Item::ArrayOfTables(_)) => return Err(format!("`{last}` is a table, not a value")),
        _ => {
            t.insert(last, Item::Value(value));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name = \"x\"\n\n[topology]\npreset = \"h800-cluster\"\nnodes = 2\n\n[workload]\nkind = \"collective\"\nranks = 8\n";

    #[test]
    fn keys_are_located_in_the_original_file() {
        let s = Source::new("s.toml", TEXT);
        assert_eq!(s.locate_key("topology.nodes"), Location::File { line: 5, col: 9 });
        assert_eq!(s.locate_key("workload.ranks"), Location::File { line: 9, col: 9 });
    }

    #[test]
    fn overrides_replace_and_insert_and_keep_line_numbers() {
        let s = Source::new("s.toml", TEXT)
            .with_overrides(&["topology.nodes=4".into(), "topology.ib_gbit_per_s=800".into(), "name=y".into()])
            .unwrap();
        assert!(s.text.contains("nodes = 4"), "{}", s.text);
        assert!(s.text.contains("name = \"y\""));
        assert_eq!(s.locate_key("topology.nodes"), Location::Set { key: "topology.nodes".into(), value: "4".into() });
        assert_eq!(s.locate_key("workload.ranks"), Location::File { line: 9, col: 9 });
        assert_eq!(s.locate_key("topology.preset"), Location::File { line: 4, col: 10 });
    }

    #[test]
    fn bad_overrides_are_reported() {
        let err = Source::new("s.toml", TEXT).with_overrides(&["nodes".into(), "name.x=1".into()]).unwrap_err();
        assert_eq!(err.len(), 2);
        assert!(err[0].to_string().contains("expected KEY=VALUE"));
        assert!(err[1].to_string().contains("is a value, not a table"));
    }

    #[test]
    fn a_removed_value_leaves_the_other_lines_where_they_were() {
        let s = Source::new("s.toml", TEXT).with_overrides(&["workload.ranks=16".into()]).unwrap();
        let t = s.without_key("topology.nodes").unwrap();
        assert!(!t.text.contains("nodes"), "{}", t.text);
        assert_eq!(t.locate_key("topology.preset"), Location::File { line: 4, col: 10 });
        assert_eq!(t.locate_key("workload.kind"), Location::File { line: 8, col: 8 });
        assert_eq!(t.locate_key("workload.ranks"), Location::Set { key: "workload.ranks".into(), value: "16".into() });
        // Tables and absent keys are not removed.
        assert!(s.without_key("topology").is_none() && s.without_key("topology.absent").is_none());
    }

    #[test]
    fn key_at_offset_names_the_value() {
        let s = Source::new("s.toml", TEXT);
        let off = TEXT.find("= 8").unwrap() + 2;
        assert_eq!(s.key_at_offset(off).as_deref(), Some("workload.ranks"));
    }
}
