//! The operating system's change notifications, through the `notify` crate (inotify on
//! Linux, FSEvents on macOS).
//!
//! They are hints, not the record: the recorder looks at every path they name and records
//! what it finds there. When the kernel's queue overflows (inotify's `IN_Q_OVERFLOW`, an
//! FSEvents "must rescan") [`Batch::overflow`] says so, and the recorder reconciles the
//! whole tree against its model, so nothing is lost silently.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::error::{Code, Error, Result};

/// A recursive watch of one directory.
pub struct Watch {
    _watcher: RecommendedWatcher,
    rx: std::sync::Mutex<Receiver<notify::Result<notify::Event>>>,
}

/// What arrived since the last call.
#[derive(Debug, Default)]
pub struct Batch {
    /// Paths named by events (absolute, as the OS gave them; duplicates possible).
    pub paths: Vec<PathBuf>,
    /// The OS dropped events: reconcile everything.
    pub overflow: bool,
    /// Errors the watcher reported (as text).
    pub errors: Vec<String>,
}

impl Watch {
    pub fn new(root: &Path) -> Result<Watch> {
        let (tx, rx) = channel();
        let mut w = notify::recommended_watcher(move |ev| {
            let _ = tx.send(ev);
        })
        .map_err(|e| Error::new(Code::Io, format!("cannot watch {}: {e}", root.display())))?;
        w.watch(root, RecursiveMode::Recursive)
            .map_err(|e| Error::new(Code::Io, format!("cannot watch {}: {e}", root.display())))?;
        Ok(Watch {
            _watcher: w,
            rx: std::sync::Mutex::new(rx),
        })
    }

    /// Waits up to `timeout` for the first event, then takes what else is queued (at most
    /// `max` events).
    pub fn next_batch(&self, timeout: Duration, max: usize) -> Batch {
        let mut b = Batch::default();
        let take = |ev: notify::Result<notify::Event>, b: &mut Batch| match ev {
            Ok(ev) => {
                if ev.need_rescan() {
                    b.overflow = true;
                }
                b.paths.extend(ev.paths);
            }
            Err(e) => {
                if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                    b.overflow = true;
                }
                b.errors.push(e.to_string());
            }
        };
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        match rx.recv_timeout(timeout) {
            Ok(ev) => take(ev, &mut b),
            Err(RecvTimeoutError::Timeout) => return b,
            Err(RecvTimeoutError::Disconnected) => {
                b.errors.push("the watcher stopped".into());
                return b;
            }
        }
        for _ in 1..max {
            match rx.try_recv() {
                Ok(ev) => take(ev, &mut b),
                Err(_) => break,
            }
        }
        b
    }
}
