//! Recording events and their validation.
//!
//! One event is one JSON object on one line (see docs/format.md, "Recordings"). Everything
//! read is checked here before it reaches a file system call: paths are relative, made of
//! plain names (no `.`, `..`, empty component, NUL or control character), sizes are bounded,
//! hashes are 64 lowercase hex digits.

use serde_json::{Map, Value};

use crate::error::{Code, Error, Result};
use crate::manifest::{parse_hex, to_hex, Digest};

/// The largest file size a recording may name (1 TiB): past it an event is more likely
/// hostile than real, and a placeholder of that size would fill a disk.
pub const MAX_SIZE: u64 = 1 << 40;
/// The longest relative path (bytes) and path component.
pub const MAX_PATH: usize = 4096;
pub const MAX_NAME: usize = 255;
/// The latest event time: 100 years in microseconds.
pub const MAX_TIME_US: u64 = 100 * 365 * 24 * 3600 * 1_000_000;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Mkdir {
        mode: u32,
    },
    /// A new file with this content (object `obj` = the whole content).
    Create {
        mode: u32,
        obj: Digest,
        size: u64,
    },
    /// An existing file rewritten whole.
    Write {
        mode: u32,
        obj: Digest,
        size: u64,
    },
    /// New bytes at the end: `obj` holds only them (`size - offset` bytes); `full` is the
    /// whole file's hash afterwards.
    Append {
        obj: Digest,
        offset: u64,
        size: u64,
        full: Digest,
    },
    Truncate {
        size: u64,
        full: Digest,
    },
    Rename {
        to: String,
    },
    Delete,
    Chmod {
        mode: u32,
    },
    Unreadable {
        errno: i32,
    },
    /// A file whose bytes were not kept: its size and content hash only (the hash is
    /// unknown for a placeholder imported from another tool).
    Placeholder {
        mode: u32,
        size: u64,
        full: Option<Digest>,
    },
    /// The tree equals snapshot `id` at this point.
    Checkpoint {
        id: Digest,
    },
}

impl Op {
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Mkdir { .. } => "mkdir",
            Op::Create { .. } => "create",
            Op::Write { .. } => "write",
            Op::Append { .. } => "append",
            Op::Truncate { .. } => "truncate",
            Op::Rename { .. } => "rename",
            Op::Delete => "delete",
            Op::Chmod { .. } => "chmod",
            Op::Unreadable { .. } => "unreadable",
            Op::Placeholder { .. } => "placeholder",
            Op::Checkpoint { .. } => "checkpoint",
        }
    }

    /// The object this event's content is read from, and its size.
    pub fn object(&self) -> Option<(Digest, u64)> {
        match self {
            Op::Create { obj, size, .. } | Op::Write { obj, size, .. } => Some((*obj, *size)),
            Op::Append {
                obj, offset, size, ..
            } => Some((*obj, size - offset)),
            _ => None,
        }
    }
}

/// One event: microseconds since the recording started, the path (relative, `/`-separated;
/// empty for the root and for checkpoints) and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub t_us: u64,
    pub path: String,
    pub op: Op,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::new(Code::InvalidManifest, msg.into())
}

/// Checks a recorded path: empty (the root) or plain names joined by `/`.
pub fn check_path(p: &str) -> Result<()> {
    if p.is_empty() {
        return Ok(());
    }
    if p.len() > MAX_PATH {
        return Err(Error::new(Code::UnsafePath, "recorded path is too long"));
    }
    for comp in p.split('/') {
        let shown = crate::error::escape_bytes(p.as_bytes());
        if comp.is_empty() || comp == "." || comp == ".." {
            return Err(Error::new(
                Code::UnsafePath,
                format!("recorded path {shown} is not a plain relative path"),
            ));
        }
        if comp.len() > MAX_NAME || comp.chars().any(|c| c.is_control()) {
            return Err(Error::new(
                Code::UnsafePath,
                format!("recorded path {shown} has a bad name"),
            ));
        }
    }
    Ok(())
}

fn get_u64(o: &Map<String, Value>, k: &str, max: u64) -> Result<u64> {
    let v = o
        .get(k)
        .and_then(Value::as_u64)
        .ok_or_else(|| bad(format!("event field {k:?} is missing or not a number")))?;
    if v > max {
        return Err(bad(format!("event field {k:?} is too large ({v})")));
    }
    Ok(v)
}

fn get_mode(o: &Map<String, Value>) -> Result<u32> {
    Ok(get_u64(o, "m", 0o7777)? as u32)
}

fn get_hash(o: &Map<String, Value>, k: &str) -> Result<Digest> {
    o.get(k)
        .and_then(Value::as_str)
        .and_then(parse_hex)
        .ok_or_else(|| bad(format!("event field {k:?} is not a 64-hex hash")))
}

fn get_str<'a>(o: &'a Map<String, Value>, k: &str) -> Result<&'a str> {
    o.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("event field {k:?} is missing or not a string")))
}

impl Event {
    /// Parses and validates one event object.
    pub fn from_json(v: &Value) -> Result<Event> {
        let o = v
            .as_object()
            .ok_or_else(|| bad("event is not a JSON object"))?;
        let t_us = get_u64(o, "t", MAX_TIME_US)?;
        let kind = get_str(o, "k")?;
        let path = match kind {
            "checkpoint" => String::new(),
            _ => get_str(o, "p")?.to_owned(),
        };
        check_path(&path)?;
        let op = match kind {
            "mkdir" => Op::Mkdir { mode: get_mode(o)? },
            "create" | "write" => {
                let (mode, obj, size) =
                    (get_mode(o)?, get_hash(o, "h")?, get_u64(o, "s", MAX_SIZE)?);
                if kind == "create" {
                    Op::Create { mode, obj, size }
                } else {
                    Op::Write { mode, obj, size }
                }
            }
            "append" => {
                let offset = get_u64(o, "o", MAX_SIZE)?;
                let size = get_u64(o, "s", MAX_SIZE)?;
                if size < offset {
                    return Err(bad("append event ends before it starts"));
                }
                Op::Append {
                    obj: get_hash(o, "h")?,
                    offset,
                    size,
                    full: get_hash(o, "f")?,
                }
            }
            "truncate" => Op::Truncate {
                size: get_u64(o, "s", MAX_SIZE)?,
                full: get_hash(o, "f")?,
            },
            "rename" => {
                let to = get_str(o, "d")?.to_owned();
                check_path(&to)?;
                if to.is_empty() {
                    return Err(Error::new(Code::UnsafePath, "rename to the root"));
                }
                Op::Rename { to }
            }
            "delete" => Op::Delete,
            "chmod" => Op::Chmod { mode: get_mode(o)? },
            "unreadable" => Op::Unreadable {
                errno: get_u64(o, "e", 4095)? as i32,
            },
            "placeholder" => Op::Placeholder {
                mode: get_mode(o)?,
                size: get_u64(o, "s", MAX_SIZE)?,
                full: match o.get("f") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(get_hash(o, "f")?),
                },
            },
            "checkpoint" => Op::Checkpoint {
                id: get_hash(o, "id")?,
            },
            other => {
                return Err(bad(format!(
                    "unknown event kind {}",
                    crate::error::escape_bytes(other.as_bytes())
                )))
            }
        };
        let root_ok = matches!(
            op,
            Op::Chmod { .. } | Op::Checkpoint { .. } | Op::Unreadable { .. }
        );
        if path.is_empty() && !root_ok {
            return Err(Error::new(
                Code::UnsafePath,
                format!("a {kind} event needs a path below the root"),
            ));
        }
        Ok(Event { t_us, path, op })
    }

    /// The event as one compact JSON object.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("t".into(), self.t_us.into());
        o.insert("k".into(), self.op.kind().into());
        if !matches!(self.op, Op::Checkpoint { .. }) {
            o.insert("p".into(), self.path.clone().into());
        }
        let h = |d: &Digest| Value::from(to_hex(d));
        match &self.op {
            Op::Mkdir { mode } | Op::Chmod { mode } => {
                o.insert("m".into(), (*mode).into());
            }
            Op::Create { mode, obj, size } | Op::Write { mode, obj, size } => {
                o.insert("m".into(), (*mode).into());
                o.insert("h".into(), h(obj));
                o.insert("s".into(), (*size).into());
            }
            Op::Append {
                obj,
                offset,
                size,
                full,
            } => {
                o.insert("h".into(), h(obj));
                o.insert("o".into(), (*offset).into());
                o.insert("s".into(), (*size).into());
                o.insert("f".into(), h(full));
            }
            Op::Truncate { size, full } => {
                o.insert("s".into(), (*size).into());
                o.insert("f".into(), h(full));
            }
            Op::Rename { to } => {
                o.insert("d".into(), to.clone().into());
            }
            Op::Delete => {}
            Op::Unreadable { errno } => {
                o.insert("e".into(), (*errno).into());
            }
            Op::Placeholder { mode, size, full } => {
                o.insert("m".into(), (*mode).into());
                o.insert("s".into(), (*size).into());
                if let Some(full) = full {
                    o.insert("f".into(), h(full));
                }
            }
            Op::Checkpoint { id } => {
                o.insert("id".into(), h(id));
            }
        }
        Value::Object(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: &str) -> Result<Event> {
        Event::from_json(&serde_json::from_str(s).unwrap())
    }

    #[test]
    fn round_trip_and_rejections() {
        let h = "ab".repeat(32);
        let e = ev(&format!(
            r#"{{"t":5,"k":"create","p":"a/b.xml","m":420,"h":"{h}","s":3}}"#
        ))
        .unwrap();
        assert_eq!(Event::from_json(&e.to_json()).unwrap(), e);
        for p in [
            "../x",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a/\u{0}b",
            "a/\nb",
            "",
        ] {
            let j = serde_json::json!({"t":1,"k":"delete","p":p});
            assert!(Event::from_json(&j).is_err(), "{p:?} accepted");
        }
        let huge =
            serde_json::json!({"t":1,"k":"placeholder","p":"x","m":420,"s":MAX_SIZE+1,"f":h});
        assert!(Event::from_json(&huge).is_err());
        let back = serde_json::json!({"t":1,"k":"append","p":"x","h":h,"o":5,"s":4,"f":h});
        assert!(Event::from_json(&back).is_err());
        assert!(ev(r#"{"t":1,"k":"explode","p":"x"}"#).is_err());
    }
}
