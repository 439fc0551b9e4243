//! A topology written out in full: the `[[topology.switch]]` and
//! `[[topology.link]]` entries of a `[topology]` table (or preset file), and
//! their resolution into an [`ExplicitGraph`] the builder wires as given.
//!
//! GPUs are not listed: `nodes` x `gpus_per_node` of them exist, named
//! `n<node>.gpu<local>` (rank = node x gpus_per_node + local; a node is one
//! scale-up domain). Switches and links are listed, each entry a *pattern*
//! that may stand for many:
//!
//! - `{var:lo..hi}` binds `var` to lo, lo+1, .. hi-1 (ranges expand left to
//!   right, the first outermost); `{lo..hi}` is a range with no name;
//! - `{expr}` is an integer expression over bound variables, `nodes`,
//!   `gpus_per_node`, integers, `+ - * / %` and parentheses.
//!
//! A link entry expands `a`; for each of its names, `b` is expanded with
//! `a`'s variables bound, and every (a, b) pair becomes `count` physical
//! links (two directed edges each). So `a = "n{n:0..nodes}.gpu{g:0..8}"`,
//! `b = "leaf{g}.{n/32}"` puts GPU g of every node on rail g (32 nodes a
//! leaf), and `a = "leaf{r:0..8}.{l:0..4}"`, `b = "spine{s:0..16}"` joins
//! every leaf to every spine.
//!
//! Every problem is a [`ConfigProblem`] at a key path such as
//! `link[3].b`, so the CLI can give its file:line.

use std::collections::HashMap;

use serde::Deserialize;

use crate::config::{show_number, ConfigProblem, Plausible};
use crate::topology::{LinkKind, LinkSpec};

/// One `[[topology.switch]]` entry as written.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchEntry {
    /// The switch's name, or a pattern naming several (`leaf{i:0..16}`).
    pub name: String,
    /// The tier it belongs to (`nvswitch`, `nic`, `leaf`, `spine`, `core`,
    /// any word); default `switch`. Tiers are listed in the order they
    /// first appear.
    pub tier: Option<String>,
}

/// The medium of an explicit link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LinkClass {
    Nvlink,
    Pcie,
    Infiniband,
}

impl LinkClass {
    pub fn kind(self) -> LinkKind {
        match self {
            LinkClass::Nvlink => LinkKind::NvLink,
            LinkClass::Pcie => LinkKind::Pcie,
            LinkClass::Infiniband => LinkKind::InfiniBand,
        }
    }
}

/// One `[[topology.link]]` entry as written.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkEntry {
    /// One end: a GPU (`n0.gpu3`) or switch name, or a pattern.
    pub a: String,
    /// The other end, expanded once per name of `a` with its variables.
    pub b: String,
    /// `nvlink`, `pcie` or `infiniband` (RoCE is `infiniband` here: the
    /// class names the scale-out medium, its rate and efficiency are the
    /// link's).
    pub class: LinkClass,
    /// Rate per direction in GB/s (bytes); or give `gbit_per_s`. Absent:
    /// the class's `topology.*` rate (`nvlink_gb_per_s`, `pcie_gb_per_s`,
    /// `ib_gbit_per_s`; NVLink and the NIC default to the device's).
    pub gb_per_s: Option<f64>,
    /// Rate per direction in Gb/s (bits).
    pub gbit_per_s: Option<f64>,
    /// Latency per traversal; absent: the class's `topology.*_latency_ns`.
    pub latency_ns: Option<f64>,
    /// Fraction of the rate a bulk transfer achieves; absent: the class's
    /// `topology.*_efficiency`, else 1.
    pub efficiency: Option<f64>,
    /// Parallel physical links per (a, b) pair (default 1).
    pub count: Option<u32>,
}

/// An end of a resolved link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A GPU by rank.
    Gpu(u32),
    /// A switch by its index in [`ExplicitGraph::switches`].
    Switch(u32),
}

/// A written-out graph, resolved: names checked, patterns expanded, every
/// link's rate, efficiency and latency known.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplicitGraph {
    /// Switch names with their tier (an index into `tiers`).
    pub switches: Vec<(String, u32)>,
    pub tiers: Vec<String>,
    /// Physical links (each becomes a->b then b->a).
    pub links: Vec<(End, End, LinkSpec)>,
}

/// Defaults an explicit link takes from its class's `topology.*` keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassDefaults {
    /// Rate per direction, bytes/s.
    pub bytes_per_s: Option<f64>,
    pub efficiency: Option<f64>,
    pub latency_ns: Option<f64>,
}

/// The most switches, and physical links, a written-out topology may have
/// (a 65,536-GPU three-tier fabric has well under a million links).
pub const MAX_SWITCHES: usize = 1 << 20;
pub const MAX_LINKS: usize = 1 << 22;

const GB_PER_S: Plausible = Plausible::new(1e-3, 1e6, "GB/s");
const GBIT_PER_S: Plausible = Plausible::new(1e-3, 1e7, "Gb/s");
const LATENCY_NS: Plausible = Plausible::new(0.0, 1e9, "ns");

/// Resolves the entries against `nodes` x `gpus_per_node` GPUs; `defaults`
/// per class in the order nvlink, pcie, infiniband. All problems at once.
pub fn resolve(
    nodes: u32,
    gpus_per_node: u32,
    switches: &[SwitchEntry],
    links: &[LinkEntry],
    defaults: [ClassDefaults; 3],
) -> Result<ExplicitGraph, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let mut push = |key: String, message: String| problems.push(ConfigProblem { key, message });
    let consts = [("nodes", i64::from(nodes)), ("gpus_per_node", i64::from(gpus_per_node))];
    let mut names: HashMap<String, End> = HashMap::new();
    for node in 0..nodes {
        for local in 0..gpus_per_node {
            names.insert(format!("n{node}.gpu{local}"), End::Gpu(node * gpus_per_node + local));
        }
    }
    let mut graph = ExplicitGraph { switches: Vec::new(), tiers: Vec::new(), links: Vec::new() };
    // The entry each switch came from, for locating problems.
    let mut entry_of: Vec<usize> = Vec::new();
    for (i, entry) in switches.iter().enumerate() {
        let tier_name = entry.tier.clone().unwrap_or_else(|| "switch".to_owned());
        if tier_name.trim().is_empty() {
            push(format!("switch[{i}].tier"), "expected a tier name, found an empty string".into());
        }
        let tier = match graph.tiers.iter().position(|t| *t == tier_name) {
            Some(t) => t as u32,
            None => {
                graph.tiers.push(tier_name);
                (graph.tiers.len() - 1) as u32
            }
        };
        let expanded = match expand(&entry.name, &Vars::new(&consts), MAX_SWITCHES - graph.switches.len()) {
            Ok(e) => e,
            Err(message) => {
                push(format!("switch[{i}].name"), message);
                continue;
            }
        };
        for (name, _) in expanded {
            if let Some(problem) = name_problem(&name) {
                push(format!("switch[{i}].name"), problem);
                break;
            }
            match names.get(&name) {
                Some(End::Gpu(_)) => {
                    push(format!("switch[{i}].name"), format!("`{name}` is a GPU's name; name the switch otherwise"));
                    break;
                }
                Some(End::Switch(_)) => {
                    push(format!("switch[{i}].name"), format!("switch `{name}` is declared twice"));
                    break;
                }
                None => {
                    names.insert(name.clone(), End::Switch(graph.switches.len() as u32));
                    graph.switches.push((name, tier));
                    entry_of.push(i);
                }
            }
        }
    }
    let mut linked = vec![false; graph.switches.len()];
    let gpus = (u64::from(nodes) * u64::from(gpus_per_node)) as usize;
    let mut union = UnionFind::new(gpus + graph.switches.len());
    let index = |end: End| match end {
        End::Gpu(r) => r as usize,
        End::Switch(s) => gpus + s as usize,
    };
    for (i, entry) in links.iter().enumerate() {
        let Some(spec) = link_spec(i, entry, defaults[entry.class as usize], &mut push) else { continue };
        let count = entry.count.unwrap_or(1);
        if count == 0 || count > 1024 {
            push(format!("link[{i}].count"), format!("expected an integer in [1, 1024], found {count}"));
            continue;
        }
        let room = MAX_LINKS.saturating_sub(graph.links.len());
        let from = match expand(&entry.a, &Vars::new(&consts), room) {
            Ok(e) => e,
            Err(message) => {
                push(format!("link[{i}].a"), message);
                continue;
            }
        };
        'pairs: for (a_name, vars) in from {
            let Some(&a) = names.get(&a_name) else {
                push(format!("link[{i}].a"), unknown(&a_name, &entry.a));
                break;
            };
            let room = MAX_LINKS.saturating_sub(graph.links.len());
            let to = match expand(&entry.b, &vars, room) {
                Ok(e) => e,
                Err(message) => {
                    push(format!("link[{i}].b"), message);
                    break;
                }
            };
            for (b_name, _) in to {
                let Some(&b) = names.get(&b_name) else {
                    push(format!("link[{i}].b"), unknown(&b_name, &entry.b));
                    break 'pairs;
                };
                if a == b {
                    push(format!("link[{i}]"), format!("`{a_name}` is linked to itself"));
                    break 'pairs;
                }
                if graph.links.len() + count as usize > MAX_LINKS {
                    push(format!("link[{i}]"), format!("expected at most {MAX_LINKS} links in all"));
                    break 'pairs;
                }
                for end in [a, b] {
                    if let End::Switch(s) = end {
                        linked[s as usize] = true;
                    }
                }
                union.join(index(a), index(b));
                for _ in 0..count {
                    graph.links.push((a, b, spec));
                }
            }
        }
    }
    if problems.is_empty() {
        if let Some(s) = linked.iter().position(|l| !l) {
            problems.push(ConfigProblem {
                key: format!("switch[{}].name", entry_of[s]),
                message: format!("switch `{}` has no link", graph.switches[s].0),
            });
        }
        if gpus > 0 {
            let root = union.find(0);
            if let Some(r) = (1..gpus).find(|&r| union.find(r) != root) {
                let name = |r: usize| format!("n{}.gpu{}", r as u32 / gpus_per_node, r as u32 % gpus_per_node);
                problems.push(ConfigProblem {
                    key: "link".into(),
                    message: format!(
                        "the graph is disconnected: {} (rank {r}) cannot reach {} (rank 0); every GPU needs a path to every other",
                        name(r),
                        name(0)
                    ),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(graph)
    } else {
        Err(problems)
    }
}

fn unknown(name: &str, pattern: &str) -> String {
    let from = if name == pattern { String::new() } else { format!(" (from `{pattern}`)") };
    format!(
        "no GPU or switch is named `{name}`{from}; GPUs are n<node>.gpu<local>, switches those of [[topology.switch]]"
    )
}

fn name_problem(name: &str) -> Option<String> {
    (name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '"' || c.is_control()))
        .then(|| format!("expected a name without spaces or quotes, found `{name}`"))
}

/// The link's rate, efficiency and latency, each its own or its class's.
fn link_spec(
    i: usize,
    entry: &LinkEntry,
    class: ClassDefaults,
    push: &mut impl FnMut(String, String),
) -> Option<LinkSpec> {
    let key = |k: &str| format!("link[{i}].{k}");
    let mut found: Vec<(String, String)> = Vec::new();
    let check = |found: &mut Vec<(String, String)>, k: &str, v: f64, range: Plausible, positive: bool| {
        if !v.is_finite() || (positive && v <= 0.0) || v < 0.0 {
            let expected = if positive { "a positive number" } else { "a number ≥ 0" };
            found.push((key(k), format!("expected {expected}, found {}", show_number(v))));
        } else if let Some(p) = range.problem(&key(k), v) {
            found.push((p.key, p.message));
        }
    };
    let bytes_per_s = match (entry.gb_per_s, entry.gbit_per_s) {
        (Some(_), Some(_)) => {
            found.push((key("gb_per_s"), "expected one of gb_per_s (bytes) and gbit_per_s (bits), found both".into()));
            0.0
        }
        (Some(v), None) => {
            check(&mut found, "gb_per_s", v, GB_PER_S, true);
            v * 1e9
        }
        (None, Some(v)) => {
            check(&mut found, "gbit_per_s", v, GBIT_PER_S, true);
            v * 1e9 / 8.0
        }
        (None, None) => match class.bytes_per_s {
            Some(v) => v,
            None => {
                found.push((
                    key("gb_per_s"),
                    "expected a rate (gb_per_s or gbit_per_s), or the class's topology rate key, found none".into(),
                ));
                0.0
            }
        },
    };
    let efficiency = entry.efficiency.or(class.efficiency).unwrap_or(1.0);
    if !(efficiency > 0.0 && efficiency <= 1.0) {
        found.push((key("efficiency"), format!("expected a value in (0, 1], found {}", show_number(efficiency))));
    }
    let latency_ns = match entry.latency_ns.or(class.latency_ns) {
        Some(v) => {
            check(&mut found, "latency_ns", v, LATENCY_NS, false);
            v
        }
        None => {
            found.push((
                key("latency_ns"),
                "expected a latency in ns (here or as the class's topology.*_latency_ns), found none".into(),
            ));
            0.0
        }
    };
    let ok = found.is_empty();
    for (k, m) in found {
        push(k, m);
    }
    ok.then_some(LinkSpec { kind: entry.class.kind(), nominal_bytes_per_s: bytes_per_s, efficiency, latency_ns })
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn new(n: usize) -> UnionFind {
        UnionFind((0..n).collect())
    }
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn join(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        self.0[a.max(b)] = a.min(b);
    }
}

/// Variables bound while expanding a pattern (small: a linear list).
#[derive(Debug, Clone)]
pub struct Vars(Vec<(String, i64)>);

impl Vars {
    fn new(consts: &[(&str, i64)]) -> Vars {
        Vars(consts.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
    }
    fn get(&self, name: &str) -> Option<i64> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// A piece of a pattern.
enum Piece {
    Text(String),
    Range { var: Option<String>, lo: String, hi: String },
    Expr(String),
}

fn parse_pattern(pattern: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let close = rest[open..].find('}').ok_or_else(|| format!("`{pattern}`: a `{{` without its `}}`"))? + open;
        let inner = rest[open + 1..close].trim();
        if inner.contains('{') {
            return Err(format!("`{pattern}`: braces do not nest"));
        }
        pieces.push(match inner.split_once("..") {
            Some((head, hi)) => {
                let (var, lo) = match head.split_once(':') {
                    Some((v, lo)) => {
                        let v = v.trim();
                        if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                            return Err(format!("`{pattern}`: expected a variable name before `:`, found `{v}`"));
                        }
                        (Some(v.to_owned()), lo)
                    }
                    None => (None, head),
                };
                Piece::Range { var, lo: lo.to_owned(), hi: hi.to_owned() }
            }
            None => Piece::Expr(inner.to_owned()),
        });
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("`{pattern}`: a `}}` without its `{{`"));
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Ok(pieces)
}

/// Every name a pattern stands for, in order, each with the variables bound
/// for it; at most `limit` names.
pub fn expand(pattern: &str, vars: &Vars, limit: usize) -> Result<Vec<(String, Vars)>, String> {
    let pieces = parse_pattern(pattern)?;
    let mut out = Vec::new();
    expand_from(pattern, &pieces, String::new(), vars.clone(), limit, &mut out)?;
    Ok(out)
}

fn expand_from(
    pattern: &str,
    pieces: &[Piece],
    prefix: String,
    vars: Vars,
    limit: usize,
    out: &mut Vec<(String, Vars)>,
) -> Result<(), String> {
    let Some((first, rest)) = pieces.split_first() else {
        if out.len() >= limit {
            return Err(format!("`{pattern}`: expands to more than {limit} names"));
        }
        out.push((prefix, vars));
        return Ok(());
    };
    match first {
        Piece::Text(t) => expand_from(pattern, rest, prefix + t, vars, limit, out),
        Piece::Expr(e) => {
            let v = eval(e, &vars).map_err(|m| format!("`{pattern}`: {m}"))?;
            expand_from(pattern, rest, format!("{prefix}{v}"), vars, limit, out)
        }
        Piece::Range { var, lo, hi } => {
            let lo = eval(lo, &vars).map_err(|m| format!("`{pattern}`: {m}"))?;
            let hi = eval(hi, &vars).map_err(|m| format!("`{pattern}`: {m}"))?;
            if lo >= hi {
                return Err(format!("`{pattern}`: the range {lo}..{hi} is empty (lo..hi takes lo up to hi - 1)"));
            }
            for v in lo..hi {
                let mut bound = vars.clone();
                if let Some(name) = var {
                    bound.0.push((name.clone(), v));
                }
                expand_from(pattern, rest, format!("{prefix}{v}"), bound, limit, out)?;
            }
            Ok(())
        }
    }
}

/// Evaluates an integer expression (`+ - * / %`, parentheses, integers,
/// variables).
fn eval(expr: &str, vars: &Vars) -> Result<i64, String> {
    let tokens = tokenize(expr)?;
    let mut p = Parser { tokens: &tokens, at: 0, vars, expr };
    let v = p.sum()?;
    if p.at != tokens.len() {
        return Err(format!("cannot read the expression `{expr}`"));
    }
    Ok(v)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(i64),
    Name(String),
    Op(char),
}

fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c.is_ascii_digit() {
            let mut n = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(d);
                chars.next();
            }
            out.push(Token::Num(n.parse().map_err(|_| format!("the number {n} is too large"))?));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut n = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_alphanumeric() || **d == '_') {
                n.push(d);
                chars.next();
            }
            out.push(Token::Name(n));
        } else if "+-*/%()".contains(c) {
            out.push(Token::Op(c));
            chars.next();
        } else {
            return Err(format!("unexpected `{c}` in the expression `{expr}`"));
        }
    }
    if out.is_empty() {
        return Err("an empty `{}`".into());
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
    vars: &'a Vars,
    expr: &'a str,
}

impl Parser<'_> {
    fn op(&mut self, ops: &str) -> Option<char> {
        match self.tokens.get(self.at) {
            Some(Token::Op(c)) if ops.contains(*c) => {
                self.at += 1;
                Some(*c)
            }
            _ => None,
        }
    }
    fn sum(&mut self) -> Result<i64, String> {
        let mut v = self.product()?;
        while let Some(op) = self.op("+-") {
            let w = self.product()?;
            v = if op == '+' { v.checked_add(w) } else { v.checked_sub(w) }.ok_or("integer overflow")?;
        }
        Ok(v)
    }
    fn product(&mut self) -> Result<i64, String> {
        let mut v = self.atom()?;
        while let Some(op) = self.op("*/%") {
            let w = self.atom()?;
            v = match op {
                '*' => v.checked_mul(w).ok_or("integer overflow")?,
                _ if w == 0 => return Err(format!("division by zero in `{}`", self.expr)),
                '/' => v.div_euclid(w),
                _ => v.rem_euclid(w),
            };
        }
        Ok(v)
    }
    fn atom(&mut self) -> Result<i64, String> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        match token {
            Some(Token::Num(n)) => Ok(n),
            Some(Token::Name(n)) => self.vars.get(&n).ok_or_else(|| {
                format!("unknown variable `{n}` (bind it with {{{n}:lo..hi}} in `a`, or use nodes, gpus_per_node)")
            }),
            Some(Token::Op('(')) => {
                let v = self.sum()?;
                match self.op(")") {
                    Some(_) => Ok(v),
                    None => Err(format!("a `(` without its `)` in `{}`", self.expr)),
                }
            }
            Some(Token::Op('-')) => Ok(-self.atom()?),
            _ => Err(format!("cannot read the expression `{}`", self.expr)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(pattern: &str) -> Vec<String> {
        expand(pattern, &Vars::new(&[("nodes", 4), ("gpus_per_node", 2)]), 1000)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn patterns_expand_left_to_right() {
        assert_eq!(names("leaf"), ["leaf"]);
        assert_eq!(names("n{n:0..2}.gpu{g:0..gpus_per_node}"), ["n0.gpu0", "n0.gpu1", "n1.gpu0", "n1.gpu1"]);
        assert_eq!(names("s{1..nodes-1}"), ["s1", "s2"]);
        assert_eq!(names("x{(3+1)*2%5}"), ["x3"]);
    }

    #[test]
    fn b_sees_the_variables_of_a() {
        let vars = Vars::new(&[("nodes", 64)]);
        let a = expand("n{n:0..nodes}", &vars, 100).unwrap();
        let b = expand("leaf{n/32}", &a[40].1, 100).unwrap();
        assert_eq!(b[0].0, "leaf1");
    }

    #[test]
    fn bad_patterns_are_errors() {
        let vars = Vars::new(&[]);
        assert!(expand("x{y}", &vars, 10).unwrap_err().contains("unknown variable `y`"));
        assert!(expand("x{1/0}", &vars, 10).unwrap_err().contains("division by zero"));
        assert!(expand("x{3..3}", &vars, 10).unwrap_err().contains("empty"));
        assert!(expand("x{0..100}", &vars, 10).unwrap_err().contains("more than 10"));
        assert!(expand("x{0..2", &vars, 10).unwrap_err().contains("without its"));
    }

    fn gpu_link(a: &str, b: &str) -> LinkEntry {
        LinkEntry {
            a: a.into(),
            b: b.into(),
            class: LinkClass::Nvlink,
            gb_per_s: Some(50.0),
            gbit_per_s: None,
            latency_ns: Some(500.0),
            efficiency: None,
            count: None,
        }
    }

    #[test]
    fn gpus_link_to_gpus_without_a_switch() {
        // ASTRA-sim's Ring of 8 NPUs: each to the next, the last to the first.
        let ring = [gpu_link("n0.gpu{g:0..gpus_per_node}", "n0.gpu{(g+1)%gpus_per_node}")];
        let g = resolve(1, 8, &[], &ring, [ClassDefaults::default(); 3]).unwrap();
        assert!(g.switches.is_empty());
        let ends: Vec<(End, End)> = g.links.iter().map(|&(a, b, _)| (a, b)).collect();
        assert_eq!(ends.len(), 8);
        assert_eq!(ends[0], (End::Gpu(0), End::Gpu(1)));
        assert_eq!(ends[7], (End::Gpu(7), End::Gpu(0)));
        assert!(g.links.iter().all(|l| l.2.nominal_bytes_per_s == 50e9 && l.2.latency_ns == 500.0));
        // FullyConnected: every pair once (b's range starts after a's GPU).
        let full = [gpu_link("n0.gpu{i:0..gpus_per_node-1}", "n0.gpu{j:i+1..gpus_per_node}")];
        let g = resolve(1, 8, &[], &full, [ClassDefaults::default(); 3]).unwrap();
        assert_eq!(g.links.len(), 28);
        // A GPU left out of a switchless graph is still found.
        let chain = [gpu_link("n0.gpu{g:0..2}", "n0.gpu{g+1}")];
        let e = resolve(1, 4, &[], &chain, [ClassDefaults::default(); 3]).unwrap_err();
        assert!(e[0].message.contains("disconnected") && e[0].message.contains("n0.gpu3"), "{e:?}");
    }
}
