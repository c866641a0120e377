//! The replay clock.
//!
//! Every event gets an absolute due time, `start + Σ min((t_i - t_{i-1}) / speed, max_delay)`,
//! computed from the recording's own times, never from when the previous event finished: a
//! slow write makes the next event late, not every later one (relative sleeps drift by the
//! sum of all overheads; epuplayer's exact mode ends ~0.9 s late over 10 s that way). The
//! wait sleeps until shortly before the due time and then yields until it, so lateness stays
//! at the scheduler's resolution.

use std::time::{Duration, Instant};

/// The absolute schedule and its lateness record.
#[derive(Debug)]
pub struct Schedule {
    speed: f64,
    max_delay: f64,
    start: Instant,
    offset: f64,
    last_t: Option<u64>,
    lateness: Vec<f64>,
}

/// Lateness statistics in seconds: (events, p50, p99, max, last).
pub type Lateness = (usize, f64, f64, f64, f64);

impl Schedule {
    /// `speed`: recording seconds per replay second (`f64::INFINITY`: burst, no waiting);
    /// `max_delay`: the longest wait between two events (`f64::INFINITY`: uncapped).
    pub fn new(speed: f64, max_delay: f64) -> Schedule {
        Schedule {
            speed,
            max_delay,
            start: Instant::now(),
            offset: 0.0,
            last_t: None,
            lateness: Vec::new(),
        }
    }

    /// Restarts the clock now; the next event is due at once.
    pub fn restart(&mut self) {
        self.start = Instant::now();
        self.offset = 0.0;
        self.last_t = None;
    }

    /// Moves every later due time by `d` (time spent on work that is not part of the
    /// recording, such as verifying a checkpoint).
    pub fn shift(&mut self, d: Duration) {
        self.start += d;
    }

    /// The due time of an event recorded at `t_us`.
    pub fn due(&mut self, t_us: u64) -> Instant {
        if let Some(last) = self.last_t {
            let gap = t_us.saturating_sub(last) as f64 / 1e6;
            let scaled = if self.speed.is_infinite() {
                0.0
            } else {
                gap / self.speed
            };
            self.offset += scaled.min(self.max_delay);
        }
        self.last_t = Some(t_us);
        self.start + Duration::from_secs_f64(self.offset.min(1e9))
    }

    /// Waits until `due`, then records how late the event starts.
    pub fn wait(&mut self, due: Instant) {
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            let left = due - now;
            if left > Duration::from_micros(1500) {
                std::thread::sleep(left - Duration::from_millis(1));
            } else {
                std::thread::yield_now();
            }
        }
        self.lateness
            .push(Instant::now().saturating_duration_since(due).as_secs_f64());
    }

    /// (events, p50, p99, max, last) lateness in seconds.
    pub fn lateness(&self) -> Lateness {
        let n = self.lateness.len();
        if n == 0 {
            return (0, 0.0, 0.0, 0.0, 0.0);
        }
        let mut v = self.lateness.clone();
        v.sort_by(f64::total_cmp);
        let pick = |q: f64| v[(((n - 1) as f64) * q).round() as usize];
        (n, pick(0.5), pick(0.99), v[n - 1], self.lateness[n - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_absolute_and_capped() {
        let mut s = Schedule::new(2.0, 0.5);
        let t0 = s.due(0);
        let t1 = s.due(400_000); // 0.2 s at 2x
        let t2 = s.due(10_400_000); // 5 s at 2x, capped at 0.5
        assert_eq!((t1 - t0).as_millis(), 200);
        assert_eq!((t2 - t0).as_millis(), 700);
        let mut b = Schedule::new(f64::INFINITY, f64::INFINITY);
        let a = b.due(0);
        assert_eq!(b.due(5_000_000), a);
    }
}
