//! The coordinator's clock for its rules: milliseconds since the epoch as read from the wall
//! clock once, at start, and advanced by a monotonic clock from then on. Lifecycle deadlines,
//! boots' expiries and every other wait are counted on it, so a wall clock set forward by an
//! hour while the coordinator runs fails no waiting node, and one set back extends no wait.
//! Times in the store stay comparable across restarts (a restart reads the wall clock anew:
//! a deadline that passed while the coordinator was down fails at its first check).

use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of the current time for the conductor's rules (the real one, or a test's).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The wall clock read once, advanced by a monotonic one.
pub struct Rebased {
    wall_at_start_ms: i64,
    mono: Arc<dyn Fn() -> Duration + Send + Sync>,
    mono_at_start: Duration,
}

impl std::fmt::Debug for Rebased {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebased")
            .field("wall_at_start_ms", &self.wall_at_start_ms)
            .finish()
    }
}

impl Rebased {
    /// The system's: the wall clock now, `Instant` from now on.
    pub fn system() -> Rebased {
        let origin = Instant::now();
        Rebased::with_sources(&crate::now_ms, Arc::new(move || origin.elapsed()))
    }

    /// From a wall clock, read once here, and a monotonic source (tests give their own).
    pub fn with_sources(
        wall: &dyn Fn() -> i64,
        mono: Arc<dyn Fn() -> Duration + Send + Sync>,
    ) -> Rebased {
        let mono_at_start = mono();
        Rebased {
            wall_at_start_ms: wall(),
            mono,
            mono_at_start,
        }
    }
}

impl Clock for Rebased {
    fn now_ms(&self) -> i64 {
        let since = (self.mono)().saturating_sub(self.mono_at_start);
        self.wall_at_start_ms + since.as_millis() as i64
    }
}

/// A clock a test sets by hand.
#[derive(Debug, Default)]
pub struct Manual(std::sync::atomic::AtomicI64);

impl Manual {
    /// A clock at `ms`.
    pub fn at(ms: i64) -> Manual {
        Manual(std::sync::atomic::AtomicI64::new(ms))
    }

    /// Moves it by `by_ms` (forward, or back when negative).
    pub fn advance(&self, by_ms: i64) {
        self.0.fetch_add(by_ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for Manual {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn the_rebased_clock_follows_the_monotonic_clock_not_the_wall() {
        let mono = Arc::new(AtomicU64::new(5_000));
        let m = mono.clone();
        let clock = Rebased::with_sources(
            &|| 1_000_000,
            Arc::new(move || Duration::from_millis(m.load(Ordering::SeqCst))),
        );
        assert_eq!(clock.now_ms(), 1_000_000);
        mono.fetch_add(1500, Ordering::SeqCst);
        assert_eq!(clock.now_ms(), 1_001_500);
        // The wall clock is read once: whatever it does later changes nothing here.
        let real = Rebased::system();
        let a = real.now_ms();
        assert!((a - crate::now_ms()).abs() < 1000);
    }
}
