//! The event log: segments of JSON lines, hash-chained.
//!
//! A segment is an ordinary content-addressed object (its key is the BLAKE3 of its bytes).
//! Its first line is a header `{"snapdir":"recording-segment","v":1,"rec":NAME,"seq":N,
//! "prev":DIGEST|null[,"meta":{…}]}`; every further line is one event. Segment `N` names the
//! digest of segment `N-1`, so a head naming the newest segment pins every event before it:
//! a segment that is torn, swapped, dropped or replayed from another recording breaks the
//! chain and the whole recording is refused with a message naming the segment.

use serde_json::{Map, Value};

use super::events::Event;
use crate::error::{Code, Error, Result};
use crate::manifest::{parse_hex, to_hex, Digest};

/// The largest segment accepted (64 MiB).
pub const MAX_SEGMENT: usize = 64 << 20;
/// The largest `meta` object (64 KiB of JSON).
pub const MAX_META: usize = 64 << 10;

fn bad(msg: impl Into<String>) -> Error {
    Error::new(Code::InvalidManifest, msg.into())
}

/// Renders one segment.
pub fn encode(
    name: &str,
    seq: u64,
    prev: Option<&Digest>,
    meta: Option<&Value>,
    events: &[Event],
) -> Vec<u8> {
    let mut head = Map::new();
    head.insert("snapdir".into(), "recording-segment".into());
    head.insert("v".into(), 1.into());
    head.insert("rec".into(), name.into());
    head.insert("seq".into(), seq.into());
    head.insert(
        "prev".into(),
        prev.map_or(Value::Null, |d| to_hex(d).into()),
    );
    if let Some(m) = meta {
        head.insert("meta".into(), m.clone());
    }
    let mut out = Value::Object(head).to_string().into_bytes();
    out.push(b'\n');
    for e in events {
        out.extend_from_slice(e.to_json().to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// A verified recording: its metadata (from segment 0), events in order, and segments.
#[derive(Debug, Clone)]
pub struct Recording {
    pub name: String,
    pub meta: Value,
    pub events: Vec<Event>,
    pub segments: Vec<Digest>,
}

/// Verifies a chain of segments, oldest first, each with the digest its head or key names:
/// the bytes hash to it, the header names this recording, sequence numbers count from 0,
/// each names its predecessor, every event is valid, and times never go backwards.
pub fn decode_chain(name: &str, segments: &[(Digest, &[u8])]) -> Result<Recording> {
    let mut events: Vec<Event> = Vec::new();
    let mut meta = Value::Object(Map::new());
    let mut prev: Option<Digest> = None;
    let mut last_t = 0u64;
    for (seq, (digest, bytes)) in segments.iter().enumerate() {
        let which = format!("segment {seq} ({}) of recording {name:?}", to_hex(digest));
        if bytes.len() > MAX_SEGMENT {
            return Err(bad(format!("{which} is larger than {MAX_SEGMENT} bytes")));
        }
        if *blake3::hash(bytes).as_bytes() != *digest {
            return Err(Error::new(
                Code::HashMismatch,
                format!("{which} does not hash to its name (torn or altered)"),
            ));
        }
        if bytes.last() != Some(&b'\n') {
            return Err(bad(format!("{which} is torn (no final newline)")));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad(format!("{which} is not UTF-8")))?;
        let mut lines = text[..text.len() - 1].split('\n');
        let head: Value = serde_json::from_str(lines.next().unwrap_or(""))
            .map_err(|e| bad(format!("{which}: bad header: {e}")))?;
        let h = head
            .as_object()
            .ok_or_else(|| bad(format!("{which}: header is not an object")))?;
        let ok = h.get("snapdir").and_then(Value::as_str) == Some("recording-segment")
            && h.get("v").and_then(Value::as_u64) == Some(1);
        if !ok {
            return Err(bad(format!("{which}: not a version 1 recording segment")));
        }
        if h.get("rec").and_then(Value::as_str) != Some(name) {
            return Err(bad(format!("{which} belongs to another recording")));
        }
        if h.get("seq").and_then(Value::as_u64) != Some(seq as u64) {
            return Err(bad(format!("{which}: sequence number out of order")));
        }
        let named_prev = match h.get("prev") {
            Some(Value::Null) | None => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(parse_hex)
                    .ok_or_else(|| bad(format!("{which}: bad previous digest")))?,
            ),
        };
        if named_prev != prev {
            return Err(bad(format!(
                "{which} does not follow its predecessor (broken chain)"
            )));
        }
        if seq == 0 {
            if let Some(m) = h.get("meta") {
                if !m.is_object() || m.to_string().len() > MAX_META {
                    return Err(bad(format!("{which}: bad meta")));
                }
                meta = m.clone();
            }
        }
        for (i, line) in lines.enumerate() {
            let v: Value = serde_json::from_str(line)
                .map_err(|e| bad(format!("{which}, event {}: {e}", i + 1)))?;
            let e = Event::from_json(&v).map_err(|e| Error {
                message: format!("{which}, event {}: {}", i + 1, e.message),
                ..e
            })?;
            if e.t_us < last_t {
                return Err(bad(format!(
                    "{which}, event {}: time goes backwards",
                    i + 1
                )));
            }
            last_t = e.t_us;
            events.push(e);
        }
        prev = Some(*digest);
    }
    Ok(Recording {
        name: name.to_owned(),
        meta,
        events,
        segments: segments.iter().map(|(d, _)| *d).collect(),
    })
}

/// The header of one segment, unverified beyond its shape: `(seq, prev)`. Used to walk a
/// chain backwards from its head before [`decode_chain`] verifies it whole.
pub fn peek_header(bytes: &[u8]) -> Result<(u64, Option<Digest>)> {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let head: Value = serde_json::from_slice(&bytes[..end])
        .map_err(|e| bad(format!("bad segment header: {e}")))?;
    let seq = head
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("segment header has no sequence number"))?;
    let prev = match head.get("prev") {
        Some(Value::Null) | None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(parse_hex)
                .ok_or_else(|| bad("segment header has a bad previous digest"))?,
        ),
    };
    Ok((seq, prev))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::events::Op;

    #[test]
    fn chain_verifies_and_breaks() {
        let e = |t| Event {
            t_us: t,
            path: "d".into(),
            op: Op::Mkdir { mode: 0o755 },
        };
        let s0 = encode("r", 0, None, Some(&serde_json::json!({"a":1})), &[e(1)]);
        let d0 = *blake3::hash(&s0).as_bytes();
        let s1 = encode("r", 1, Some(&d0), None, &[e(2)]);
        let d1 = *blake3::hash(&s1).as_bytes();
        let rec = decode_chain("r", &[(d0, &s0), (d1, &s1)]).unwrap();
        assert_eq!(rec.events.len(), 2);
        assert!(decode_chain("other", &[(d0, &s0)]).is_err());
        assert!(decode_chain("r", &[(d1, &s1)]).is_err());
        let torn = &s1[..s1.len() - 3];
        assert!(decode_chain("r", &[(d0, &s0), (*blake3::hash(torn).as_bytes(), torn)]).is_err());
        let back = encode("r", 1, Some(&d0), None, &[e(0)]);
        assert!(decode_chain("r", &[(d0, &s0), (*blake3::hash(&back).as_bytes(), &back)]).is_err());
    }
}
