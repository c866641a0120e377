//! Recording a directory's life and replaying it with its timing.
//!
//! * [`events`] — the events (mkdir, create, write, append, …) and their strict validation:
//!   a recording read from a store is untrusted input.
//! * [`segment`] — the event log: JSON-lines segments, each naming the digest of the one
//!   before it, verified when read.
//! * [`schedule`] — the replay clock: an absolute schedule, lateness statistics.
//! * [`apply`] — applying events inside a target directory, never outside it.
//! * [`capture`] — reading a changed file once, hashing it as it is staged.
//! * [`watch`] — the operating system's change notifications (the `notify` crate), with
//!   overflow detection.

pub mod apply;
pub mod capture;
pub mod events;
pub mod schedule;
pub mod segment;
pub mod watch;
