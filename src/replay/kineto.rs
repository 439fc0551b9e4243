//! The PyTorch profiler (Kineto) Chrome-trace reader: plain JSON or gzip
//! (recognised by its magic bytes, not the file name), streamed.
//!
//! The file is read through a counting reader and decoded event by event
//! (a serde visitor over `traceEvents`), so the raw text is never held:
//! only the events replay needs (GPU kernels, copies and sets, CUDA
//! runtime/driver calls, CPU ops, `cuda_sync` records, the CPU-side
//! `user_annotation` ranges) are kept, in a compact form with interned
//! names. Flow events (`ac2g`, `fwdbwd`), metadata, GPU-side annotations
//! (`gpu_user_annotation`) and Python function events are counted and
//! skipped. Every field is optional
//! as far as the reader goes; what replay cannot do without is decided by
//! `graph.rs`. A top level that is a bare array of events is accepted too.
//!
//! Errors name the file and the byte offset (of the decompressed JSON) or
//! the event index: truncated or malformed JSON, a broken gzip stream, a
//! negative duration.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufReader, Read};
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::ReplayError;

/// What an event is, as far as replay cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Kernel,
    Memcpy,
    Memset,
    /// A CUDA runtime or driver API call on a CPU thread.
    Runtime,
    CpuOp,
    /// Kineto's `cuda_sync` record of a wait (stream, event or context).
    CudaSync,
    /// A `user_annotation` range on a CPU thread (`record_function`, e.g.
    /// DeepSeek's `attn(F)`, `mlp(B)`).
    Annotation,
}

impl EventKind {
    pub fn is_gpu(self) -> bool {
        matches!(self, EventKind::Kernel | EventKind::Memcpy | EventKind::Memset)
    }
}

/// Message details of a collective kernel (NCCL), where the trace has them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CollectiveInfo {
    pub name: Option<String>,
    pub in_elems: Option<f64>,
    pub out_elems: Option<f64>,
    pub dtype: Option<String>,
    pub group_size: Option<u32>,
    pub group: Option<String>,
    /// The group's global ranks: `Process Group Ranks` (`"[0, 8]"`), else
    /// `Global rank start` / `Global rank stride` with `Group size`.
    pub group_ranks: Option<Vec<u32>>,
}

/// What a `cuda_sync` event says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncInfo {
    /// `Stream Sync`, `Event Sync`, `Context Sync`, `Stream Wait Event`.
    pub kind: String,
    pub wait_on_stream: Option<i64>,
    pub wait_on_record_correlation: Option<i64>,
}

/// The shapes and types of a CPU op's inputs (`Input Dims`, `Input type`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct OpInputs {
    /// One list of dimensions per input (empty for scalars and non-tensors).
    pub dims: Vec<Vec<i64>>,
    pub types: Vec<String>,
}

/// One kept event, compact.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Index in the file's `traceEvents` (0-based), for messages.
    pub index: u32,
    pub kind: EventKind,
    /// Into [`KinetoTrace::names`].
    pub name: u32,
    /// Interned `pid` and `tid` (numbers or strings in real traces).
    pub pid: u32,
    pub tid: u32,
    /// Start, nanoseconds (the trace's own clock); `None` if missing.
    pub ts_ns: Option<i64>,
    pub dur_ns: Option<i64>,
    /// Whether the event is a complete (`X`) event.
    pub complete: bool,
    pub correlation: Option<i64>,
    pub external_id: Option<i64>,
    pub stream: Option<i64>,
    pub device: Option<i64>,
    pub grid: [u32; 3],
    pub bytes: Option<f64>,
    /// Into [`KinetoTrace::inputs`] for CPU ops that recorded shapes.
    pub inputs: Option<u32>,
    pub sync: Option<Box<SyncInfo>>,
    pub collective: Option<Box<CollectiveInfo>>,
}

/// A whole trace file as read.
#[derive(Debug, Clone, Default)]
pub struct KinetoTrace {
    pub path: String,
    /// `deviceProperties[0].name`, e.g. `NVIDIA H800`.
    pub device_name: Option<String>,
    /// `deviceProperties[0].numSms`.
    pub device_sms: Option<u32>,
    /// `distributedInfo.rank` / `world_size`.
    pub rank: Option<u32>,
    pub world_size: Option<u32>,
    /// Interned names (event names, pid and tid strings).
    pub names: Vec<String>,
    pub inputs: Vec<OpInputs>,
    pub events: Vec<Event>,
    /// Events in the file (kept or not).
    pub total_events: u64,
    /// Bytes of JSON read (decompressed).
    pub json_bytes: u64,
}

impl KinetoTrace {
    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }
}

/// Reads a Kineto trace file (JSON or gzip-compressed JSON).
pub fn read(path: &Path) -> Result<KinetoTrace, ReplayError> {
    let origin = path.display().to_string();
    let (file, _) =
        crate::files::open_regular(path, crate::files::MAX_TRACE_BYTES).map_err(|e| ReplayError::new(&origin, e))?;
    read_from(&origin, file)
}

/// Reads a Kineto trace (JSON or gzip-compressed JSON) from `source`;
/// `origin` names it in errors.
pub fn read_from(origin: &str, source: impl Read + 'static) -> Result<KinetoTrace, ReplayError> {
    let origin = origin.to_owned();
    let mut raw = BufReader::with_capacity(1 << 16, source);
    let gz = {
        use std::io::BufRead;
        let head = raw.fill_buf().map_err(|e| ReplayError::new(&origin, format!("cannot read: {e}")))?;
        head.starts_with(&[0x1f, 0x8b])
    };
    let compressed = Counted::new(raw);
    let compressed_pos = compressed.handle();
    let inner: Box<dyn Read> =
        if gz { Box::new(flate2::read::MultiGzDecoder::new(compressed)) } else { Box::new(compressed) };
    let json = Counted::new(BufReader::with_capacity(1 << 16, inner));
    let pos = json.handle();
    let mut builder = Builder::new(origin.clone());
    let mut de = serde_json::Deserializer::from_reader(json);
    let parsed = de.deserialize_any(TopVisitor { b: &mut builder }).and_then(|()| de.end());
    if let Err(e) = parsed {
        if let Some(err) = builder.error.take() {
            return Err(err);
        }
        let at = pos.get();
        let message = if e.is_io() {
            if gz {
                format!(
                    "truncated or corrupt gzip stream (after {} compressed bytes, byte {at} of the JSON): {e}",
                    compressed_pos.get()
                )
            } else {
                format!("read failed at byte {at}: {e}")
            }
        } else if e.is_eof() {
            format!("truncated JSON: the file ends at byte {at} inside {}", builder.where_())
        } else {
            format!("malformed JSON at byte {at} ({}): {e}", builder.where_())
        };
        return Err(ReplayError::new(&origin, message));
    }
    let mut trace = builder.finish();
    trace.json_bytes = pos.get();
    Ok(trace)
}

/// A reader that counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R> Counted<R> {
    fn new(inner: R) -> Self {
        Counted { inner, count: Default::default() }
    }
    fn handle(&self) -> std::rc::Rc<std::cell::Cell<u64>> {
        self.count.clone()
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Collects kept events while the file streams by.
struct Builder {
    trace: KinetoTrace,
    name_index: HashMap<String, u32>,
    input_index: HashMap<OpInputs, u32>,
    /// The first semantic error (reported instead of serde's).
    error: Option<ReplayError>,
    in_events: bool,
    next_index: u32,
}

impl Builder {
    fn new(path: String) -> Builder {
        Builder {
            trace: KinetoTrace { path, ..Default::default() },
            name_index: HashMap::new(),
            input_index: HashMap::new(),
            error: None,
            in_events: false,
            next_index: 0,
        }
    }

    fn where_(&self) -> String {
        if self.in_events {
            format!("traceEvents[{}]", self.next_index)
        } else {
            "the top-level object".to_owned()
        }
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.name_index.get(s) {
            return i;
        }
        let i = self.trace.names.len() as u32;
        self.trace.names.push(s.to_owned());
        self.name_index.insert(s.to_owned(), i);
        i
    }

    fn finish(self) -> KinetoTrace {
        self.trace
    }

    /// Keeps one event; an error (negative duration) stops the read.
    fn push(&mut self, raw: RawEvent) -> Result<(), ReplayError> {
        let index = self.next_index;
        self.next_index += 1;
        self.trace.total_events += 1;
        let kind = match raw.cat.as_deref() {
            Some("kernel") => EventKind::Kernel,
            Some("gpu_memcpy") | Some("Memcpy") => EventKind::Memcpy,
            Some("gpu_memset") | Some("Memset") => EventKind::Memset,
            Some("cuda_runtime") | Some("cuda_driver") | Some("Runtime") => EventKind::Runtime,
            Some("cpu_op") | Some("Operator") => EventKind::CpuOp,
            Some("cuda_sync") => EventKind::CudaSync,
            Some("user_annotation") => EventKind::Annotation,
            _ => return Ok(()),
        };
        let ph = raw.ph.as_deref().unwrap_or("X");
        if !matches!(ph, "X") && !kind.is_gpu() {
            return Ok(());
        }
        let name = raw.name.as_deref().unwrap_or("");
        if let Some(d) = raw.dur {
            if d < 0 {
                return Err(ReplayError::new(
                    &self.trace.path,
                    format!("traceEvents[{index}] ({name}): negative duration {} us", d as f64 / 1e3),
                ));
            }
        }
        let name = self.intern(name);
        let pid = self.intern(&raw.pid.map(|p| p.0).unwrap_or_default());
        let tid = self.intern(&raw.tid.map(|p| p.0).unwrap_or_default());
        let a = raw.args.unwrap_or_default();
        let ranks_of_group = group_ranks(&a);
        let inputs = match (kind, a.input_dims) {
            (EventKind::CpuOp, Some(dims)) => {
                let inputs = OpInputs { dims: dims_of(&dims), types: types_of(a.input_type.as_ref()) };
                let next = self.trace.inputs.len() as u32;
                let id = *self.input_index.entry(inputs.clone()).or_insert(next);
                if id == next {
                    self.trace.inputs.push(inputs);
                }
                Some(id)
            }
            _ => None,
        };
        let grid = match &a.grid {
            Some(Value::Array(v)) => {
                let g = |i: usize| v.get(i).and_then(Value::as_u64).unwrap_or(1).min(u32::MAX as u64) as u32;
                [g(0), g(1), g(2)]
            }
            _ => [0, 0, 0],
        };
        let sync = (kind == EventKind::CudaSync).then(|| {
            Box::new(SyncInfo {
                kind: a.cuda_sync_kind.clone().unwrap_or_else(|| self.trace.names[name as usize].clone()),
                wait_on_stream: a.wait_on_stream.and_then(|s| s.0).filter(|&s| s >= 0),
                wait_on_record_correlation: a.wait_on_record.and_then(|s| s.0).filter(|&s| s >= 0),
            })
        });
        let collective = (a.collective_name.is_some() || a.in_msg_nelems.is_some()).then(|| {
            Box::new(CollectiveInfo {
                name: a.collective_name.clone(),
                in_elems: a.in_msg_nelems.and_then(|v| v.0),
                out_elems: a.out_msg_nelems.and_then(|v| v.0),
                dtype: a.dtype.clone(),
                group_size: a.group_size.and_then(|v| v.0).map(|v| v.clamp(0, u32::MAX as i64) as u32),
                group: a.pg_name.clone(),
                group_ranks: ranks_of_group,
            })
        });
        self.trace.events.push(Event {
            index,
            kind,
            name,
            pid,
            tid,
            ts_ns: raw.ts,
            dur_ns: raw.dur,
            complete: ph == "X",
            correlation: a.correlation.and_then(|v| v.0),
            external_id: a.external_id.and_then(|v| v.0),
            stream: a.stream.and_then(|v| v.0),
            device: a.device.and_then(|v| v.0),
            grid,
            bytes: a.bytes.and_then(|v| v.0.map(|b| b as f64)),
            inputs,
            sync,
            collective,
        });
        Ok(())
    }
}

fn dims_of(v: &Value) -> Vec<Vec<i64>> {
    let Value::Array(items) = v else { return Vec::new() };
    items
        .iter()
        .map(|d| match d {
            Value::Array(x) => x.iter().filter_map(Value::as_i64).collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn types_of(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().map(|t| t.as_str().unwrap_or("").to_owned()).collect(),
        _ => Vec::new(),
    }
}

/// One event as written (every field optional).
#[derive(Deserialize)]
struct RawEvent {
    ph: Option<String>,
    cat: Option<String>,
    name: Option<String>,
    pid: Option<IdText>,
    tid: Option<IdText>,
    #[serde(default, deserialize_with = "micros_as_ns")]
    ts: Option<i64>,
    #[serde(default, deserialize_with = "micros_as_ns")]
    dur: Option<i64>,
    args: Option<RawArgs>,
}

#[derive(Deserialize, Default)]
struct RawArgs {
    #[serde(rename = "External id")]
    external_id: Option<Lenient>,
    correlation: Option<Lenient>,
    stream: Option<Lenient>,
    device: Option<Lenient>,
    grid: Option<Value>,
    bytes: Option<Lenient>,
    #[serde(rename = "Input Dims")]
    input_dims: Option<Value>,
    #[serde(rename = "Input type")]
    input_type: Option<Value>,
    cuda_sync_kind: Option<String>,
    wait_on_stream: Option<Lenient>,
    #[serde(rename = "wait_on_cuda_event_record_corr_id")]
    wait_on_record: Option<Lenient>,
    #[serde(rename = "Collective name")]
    collective_name: Option<String>,
    #[serde(rename = "In msg nelems")]
    in_msg_nelems: Option<LenientF>,
    #[serde(rename = "Out msg nelems")]
    out_msg_nelems: Option<LenientF>,
    #[serde(rename = "Group size")]
    group_size: Option<Lenient>,
    dtype: Option<String>,
    #[serde(rename = "Process Group Name")]
    pg_name: Option<String>,
    #[serde(rename = "Process Group Ranks")]
    pg_ranks: Option<Value>,
    #[serde(rename = "Global rank start")]
    rank_start: Option<Lenient>,
    #[serde(rename = "Global rank stride")]
    rank_stride: Option<Lenient>,
}

/// A collective's group ranks from its args (see
/// [`CollectiveInfo::group_ranks`]); `None` when absent, empty or not
/// a list of ranks.
fn group_ranks(a: &RawArgs) -> Option<Vec<u32>> {
    let rank = |v: i64| u32::try_from(v).ok();
    let listed = match &a.pg_ranks {
        Some(Value::String(s)) => {
            let inner = s.trim().strip_prefix('[')?.strip_suffix(']')?;
            inner.split(',').map(|t| t.trim().parse::<i64>().ok().and_then(rank)).collect::<Option<Vec<u32>>>()
        }
        Some(Value::Array(v)) => v.iter().map(|x| x.as_i64().and_then(rank)).collect::<Option<Vec<u32>>>(),
        _ => None,
    };
    if let Some(l) = listed.filter(|l| !l.is_empty()) {
        return Some(l);
    }
    let (start, stride) = (rank(a.rank_start.as_ref()?.0?)?, rank(a.rank_stride.as_ref()?.0?)?);
    let size = rank(a.group_size.as_ref()?.0?)?;
    if size == 0 || stride == 0 || size > 1 << 20 {
        return None;
    }
    (0..size).map(|i| start.checked_add(i.checked_mul(stride)?)).collect()
}

/// An integer written as a number or a numeric string; anything else is
/// read as absent.
struct Lenient(Option<i64>);
/// A number written as a number or a numeric string.
struct LenientF(Option<f64>);
/// A pid/tid: a number or a string, kept as text.
struct IdText(String);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = LenientF::deserialize(d)?.0;
        Ok(Lenient(v.filter(|x| x.is_finite() && x.abs() < 9.0e18).map(|x| x as i64)))
    }
}

impl<'de> Deserialize<'de> for LenientF {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LenientF;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LenientF, E> {
                Ok(LenientF(Some(v as f64)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LenientF, E> {
                Ok(LenientF(Some(v as f64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<LenientF, E> {
                Ok(LenientF(Some(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LenientF, E> {
                Ok(LenientF(v.trim().parse().ok()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<LenientF, E> {
                Ok(LenientF(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<LenientF, E> {
                Ok(LenientF(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LenientF, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(LenientF(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LenientF, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(LenientF(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for IdText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IdText, E> {
                Ok(IdText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IdText, E> {
                Ok(IdText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<IdText, E> {
                Ok(IdText(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdText, E> {
                Ok(IdText(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A time in microseconds (integer or fractional) as integer nanoseconds.
fn micros_as_ns<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = LenientF::deserialize(d)?.0;
    Ok(v.filter(|x| x.is_finite() && x.abs() < 9.0e15).map(|us| {
        // Whole microseconds stay exact; fractions to the nanosecond.
        let whole = us.trunc();
        whole as i64 * 1000 + ((us - whole) * 1000.0).round() as i64
    }))
}

struct TopVisitor<'a> {
    b: &'a mut Builder,
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Chrome trace: an object with traceEvents, or an array of events")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "traceEvents" => map.next_value_seed(EventsSeed { b: &mut *self.b })?,
                "deviceProperties" => {
                    let props: Value = map.next_value()?;
                    if let Some(first) = props.as_array().and_then(|a| a.first()) {
                        self.b.trace.device_name = first.get("name").and_then(Value::as_str).map(str::to_owned);
                        self.b.trace.device_sms =
                            first.get("numSms").and_then(Value::as_u64).map(|v| v.min(u32::MAX as u64) as u32);
                    }
                }
                "distributedInfo" => {
                    let info: Value = map.next_value()?;
                    let get = |k: &str| info.get(k).and_then(Value::as_u64).map(|v| v.min(u32::MAX as u64) as u32);
                    self.b.trace.rank = get("rank");
                    self.b.trace.world_size = get("world_size");
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        EventsSeed { b: self.b }.visit_seq(seq)
    }
}

struct EventsSeed<'a> {
    b: &'a mut Builder,
}

impl<'de> DeserializeSeed<'de> for EventsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EventsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of trace events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.b.in_events = true;
        while let Some(raw) = seq.next_element::<RawEvent>()? {
            if let Err(e) = self.b.push(raw) {
                self.b.error = Some(e);
                return Err(de::Error::custom("stopped"));
            }
        }
        self.b.in_events = false;
        Ok(())
    }
}

/// The device a trace names in `deviceProperties`, read from at most the
/// first MiB of its JSON (Kineto writes it before the events); `None` if
/// the file cannot be read or does not say.
pub fn sniff_device_name(path: &Path) -> Option<String> {
    let mut raw = BufReader::new(crate::files::open_regular(path, crate::files::MAX_TRACE_BYTES).ok()?.0);
    let gz = {
        use std::io::BufRead;
        raw.fill_buf().ok()?.starts_with(&[0x1f, 0x8b])
    };
    let inner: Box<dyn Read> = if gz { Box::new(flate2::read::MultiGzDecoder::new(raw)) } else { Box::new(raw) };
    let mut head = Vec::new();
    let _ = inner.take(1 << 20).read_to_end(&mut head);
    let text = String::from_utf8_lossy(&head);
    let props = &text[text.find("\"deviceProperties\"")?..];
    let after = &props[props.find("\"name\"")? + 6..];
    let start = after.find('"')? + 1;
    let len = after[start..].find('"')?;
    Some(after[start..start + len].to_owned())
}
