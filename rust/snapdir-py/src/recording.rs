//! Bindings of the recording code (event log, capture, watch, replay): each call converts
//! its arguments, then runs detached.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use snapdir_core as core;
use snapdir_core::manifest::{parse_hex, to_hex, Digest};
use snapdir_core::recording::{apply, capture, events, schedule, segment, watch};

use crate::errors::to_py_err;

fn invalid(py: Python<'_>, msg: String) -> PyErr {
    to_py_err(py, core::Error::new(core::Code::InvalidArgument, msg))
}

fn hex(py: Python<'_>, s: &str) -> PyResult<Digest> {
    parse_hex(s).ok_or_else(|| invalid(py, format!("invalid digest {s:?}")))
}

/// Renders one segment from JSON events (each validated first).
#[pyfunction]
#[pyo3(signature = (name, seq, prev, meta_json, events_json))]
pub fn recording_encode_segment<'py>(
    py: Python<'py>,
    name: &str,
    seq: u64,
    prev: Option<&str>,
    meta_json: Option<&str>,
    events_json: Vec<String>,
) -> PyResult<Bound<'py, PyBytes>> {
    let prev = prev.map(|p| hex(py, p)).transpose()?;
    let meta = meta_json
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .map_err(|e| invalid(py, format!("bad meta: {e}")))?;
    let mut evs = Vec::with_capacity(events_json.len());
    for j in &events_json {
        let v: serde_json::Value =
            serde_json::from_str(j).map_err(|e| invalid(py, format!("bad event: {e}")))?;
        evs.push(events::Event::from_json(&v).map_err(|e| to_py_err(py, e))?);
    }
    let out = segment::encode(name, seq, prev.as_ref(), meta.as_ref(), &evs);
    Ok(PyBytes::new(py, &out))
}

/// `(seq, prev)` of a segment's header (shape only; the chain is verified by
/// `RecordingLog`).
#[pyfunction]
pub fn recording_peek_header(py: Python<'_>, data: &[u8]) -> PyResult<(u64, Option<String>)> {
    let (seq, prev) = segment::peek_header(data).map_err(|e| to_py_err(py, e))?;
    Ok((seq, prev.map(|d| to_hex(&d))))
}

/// A verified recording (see `snapdir.recording`).
#[pyclass(frozen, module = "snapdir")]
pub struct RecordingLog {
    inner: Arc<segment::Recording>,
}

#[pymethods]
impl RecordingLog {
    /// Verifies `segments` (`(digest, bytes)`, oldest first) as the chain of `name`.
    #[new]
    fn new(py: Python<'_>, name: String, segments: Vec<(String, Vec<u8>)>) -> PyResult<Self> {
        let segs = segments
            .iter()
            .map(|(h, b)| Ok((hex(py, h)?, b.as_slice())))
            .collect::<PyResult<Vec<_>>>()?;
        let rec = py
            .detach(|| segment::decode_chain(&name, &segs))
            .map_err(|e| to_py_err(py, e))?;
        Ok(RecordingLog {
            inner: Arc::new(rec),
        })
    }

    fn __len__(&self) -> usize {
        self.inner.events.len()
    }

    /// The recording's metadata (JSON object text, from its first segment).
    fn meta_json(&self) -> String {
        self.inner.meta.to_string()
    }

    /// The segment digests, oldest first.
    fn segments(&self) -> Vec<String> {
        self.inner.segments.iter().map(|d| to_hex(d)).collect()
    }

    /// Events `start..end` as JSON object texts.
    fn events_json(&self, start: usize, end: usize) -> Vec<String> {
        let ev = &self.inner.events;
        let end = end.min(ev.len());
        ev[start.min(end)..end]
            .iter()
            .map(|e| e.to_json().to_string())
            .collect()
    }

    /// `(t_us, kind, path)` of every event.
    fn outline(&self) -> Vec<(u64, &'static str, String)> {
        self.inner
            .events
            .iter()
            .map(|e| (e.t_us, e.op.kind(), e.path.clone()))
            .collect()
    }

    /// `(index, t_us, snapshot id)` of every checkpoint.
    fn checkpoints(&self) -> Vec<(usize, u64, String)> {
        self.inner
            .events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.op {
                events::Op::Checkpoint { id } => Some((i, e.t_us, to_hex(id))),
                _ => None,
            })
            .collect()
    }

    /// The content objects events `start..end` read: `(digest, size)`, each once.
    fn objects(&self, start: usize, end: usize) -> Vec<(String, u64)> {
        let ev = &self.inner.events;
        let end = end.min(ev.len());
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for e in &ev[start.min(end)..end] {
            if let Some((d, n)) = e.op.object() {
                if seen.insert(d) {
                    out.push((to_hex(&d), n));
                }
            }
        }
        out
    }
}

/// Reads `rel` below `root` once (see `snapdir_core::recording::capture`). Returns
/// `(kind, mode, ino, size, full, same, placeholder, staged)` where kind is `missing`,
/// `dir`, `file`, `other`, `unreadable` (size = errno) or `influx`, and staged is
/// `(digest, size, path, offset)` or None.
#[pyfunction]
#[pyo3(signature = (root, rel, prev, staging, keep))]
#[allow(clippy::type_complexity)]
pub fn recording_capture(
    py: Python<'_>,
    root: PathBuf,
    rel: String,
    prev: Option<(u64, String)>,
    staging: PathBuf,
    keep: &str,
) -> PyResult<(
    &'static str,
    u32,
    u64,
    u64,
    Option<String>,
    bool,
    bool,
    Option<(String, u64, PathBuf, u64)>,
)> {
    let prev = prev.map(|(n, h)| hex(py, &h).map(|d| (n, d))).transpose()?;
    let keep = match keep {
        "all" => capture::Keep::All,
        "none" => capture::Keep::None,
        "text" => capture::Keep::Text,
        other => return Err(invalid(py, format!("invalid content mode {other:?}"))),
    };
    let found = py
        .detach(|| capture::capture(&root, &rel, prev, &staging, keep))
        .map_err(|e| to_py_err(py, e))?;
    Ok(match found {
        capture::Found::Missing => ("missing", 0, 0, 0, None, false, false, None),
        capture::Found::Other => ("other", 0, 0, 0, None, false, false, None),
        capture::Found::InFlux => ("influx", 0, 0, 0, None, false, false, None),
        capture::Found::Unreadable { errno } => {
            ("unreadable", 0, 0, errno as u64, None, false, false, None)
        }
        capture::Found::Dir { mode, ino } => ("dir", mode, ino, 0, None, false, false, None),
        capture::Found::File(c) => (
            "file",
            c.mode,
            c.ino,
            c.size,
            Some(to_hex(&c.full)),
            c.same,
            c.placeholder,
            c.staged.map(|(d, n, p, o)| (to_hex(&d), n, p, o)),
        ),
    })
}

/// A recursive watch of a directory through the OS's notifications.
#[pyclass(frozen, module = "snapdir")]
pub struct Watch {
    inner: Mutex<Option<watch::Watch>>,
}

#[pymethods]
impl Watch {
    #[new]
    fn new(py: Python<'_>, root: PathBuf) -> PyResult<Self> {
        let w = py
            .detach(|| watch::Watch::new(&root))
            .map_err(|e| to_py_err(py, e))?;
        Ok(Watch {
            inner: Mutex::new(Some(w)),
        })
    }

    /// Waits up to `timeout` seconds; returns `(paths, overflow, errors)`.
    fn next_batch(
        &self,
        py: Python<'_>,
        timeout: f64,
        max: usize,
    ) -> PyResult<(Vec<PathBuf>, bool, Vec<String>)> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(w) = guard.as_ref() else {
            return Ok((Vec::new(), false, vec!["closed".into()]));
        };
        let b = py.detach(|| w.next_batch(Duration::from_secs_f64(timeout.max(0.0)), max));
        Ok((b.paths, b.overflow, b.errors))
    }

    /// Stops watching.
    fn close(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

struct ReplayState {
    target: apply::Target,
    schedule: schedule::Schedule,
}

/// Applies a verified recording's events to a target on an absolute schedule.
#[pyclass(frozen, module = "snapdir")]
pub struct Replayer {
    log: Arc<segment::Recording>,
    state: Mutex<ReplayState>,
}

#[pymethods]
impl Replayer {
    #[new]
    #[pyo3(signature = (log, target, objects, speed, max_delay, placeholders, verify_each, store_layout=false, make_parents=false, split_writes=1))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        log: &RecordingLog,
        target: PathBuf,
        objects: PathBuf,
        speed: f64,
        max_delay: f64,
        placeholders: &str,
        verify_each: bool,
        store_layout: bool,
        make_parents: bool,
        split_writes: u64,
    ) -> PyResult<Self> {
        let ph = match placeholders {
            "zeros" => apply::Placeholders::Zeros,
            "sparse" => apply::Placeholders::Sparse,
            other => return Err(invalid(py, format!("invalid placeholder mode {other:?}"))),
        };
        if speed.is_nan() || speed <= 0.0 || max_delay.is_nan() || max_delay < 0.0 {
            return Err(invalid(py, "speed must be > 0 and max delay >= 0".into()));
        }
        if split_writes == 0 || split_writes > apply::MAX_SPLIT {
            return Err(invalid(
                py,
                format!("split writes must be 1 to {}", apply::MAX_SPLIT),
            ));
        }
        let mut t = apply::Target::open(&target, &objects, store_layout, ph, verify_each)
            .map_err(|e| to_py_err(py, e))?;
        t.set_chaos(make_parents, split_writes);
        Ok(Replayer {
            log: log.inner.clone(),
            state: Mutex::new(ReplayState {
                target: t,
                schedule: schedule::Schedule::new(speed, max_delay),
            }),
        })
    }

    /// Applies events from `start` until `end`, stopping after a checkpoint when
    /// `stop_at_checkpoint` and after `max_events`; `timed=False` applies without waiting
    /// (the part before `--from`). Returns `(next, placeholders, unreadable)`.
    #[pyo3(signature = (start, end, timed, stop_at_checkpoint, max_events=usize::MAX))]
    fn run(
        &self,
        py: Python<'_>,
        start: usize,
        end: usize,
        timed: bool,
        stop_at_checkpoint: bool,
        max_events: usize,
    ) -> PyResult<(usize, usize, usize)> {
        let log = self.log.clone();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *st;
        let res = py.detach(|| -> core::Result<(usize, usize, usize)> {
            let end = end.min(log.events.len());
            let (mut ph, mut unread) = (0, 0);
            let mut i = start;
            let mut done = 0;
            while i < end && done < max_events {
                let e = &log.events[i];
                if timed {
                    let due = st.schedule.due(e.t_us);
                    st.schedule.wait(due);
                }
                let r = st.target.apply(e)?;
                i += 1;
                done += 1;
                match r {
                    apply::Applied::Placeholder => ph += 1,
                    apply::Applied::Unreadable => unread += 1,
                    apply::Applied::Checkpoint if stop_at_checkpoint => break,
                    _ => {}
                }
            }
            Ok((i, ph, unread))
        });
        res.map_err(|e| to_py_err(py, e))
    }

    /// Restarts the clock: the next timed event is due now.
    fn restart(&self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .schedule
            .restart();
    }

    /// Moves every later due time by `seconds`.
    fn shift(&self, seconds: f64) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .schedule
            .shift(Duration::from_secs_f64(seconds.max(0.0)));
    }

    /// `(events, p50, p99, max, last)` lateness in seconds.
    fn lateness(&self) -> (usize, f64, f64, f64, f64) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .schedule
            .lateness()
    }
}

/// Registers this file's classes and functions.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RecordingLog>()?;
    m.add_class::<Watch>()?;
    m.add_class::<Replayer>()?;
    m.add_function(wrap_pyfunction!(recording_encode_segment, m)?)?;
    m.add_function(wrap_pyfunction!(recording_peek_header, m)?)?;
    m.add_function(wrap_pyfunction!(recording_capture, m)?)?;
    Ok(())
}
