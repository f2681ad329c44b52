//! Time. Nothing else in the crate reads the system clock.

use std::fmt;
#[cfg(any(test, feature = "testing"))]
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time in unix seconds.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time, unix seconds.
    fn now(&self) -> i64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> i64 {
        unix_secs(SystemTime::now())
    }
}

/// `time` in whole unix seconds.
fn unix_secs(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // A clock set before 1970: count backwards.
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// A clock that moves only when told to; clones share one time. For tests: give a clone to
/// [`SessionBuilder::clock`](crate::SessionBuilder::clock) and to
/// [`FakeChatAppBuilder::clock`](crate::testing::FakeChatAppBuilder::clock), and both move
/// together.
#[cfg(any(test, feature = "testing"))]
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicI64>);

#[cfg(any(test, feature = "testing"))]
impl ManualClock {
    /// A clock that reads `now` until it is moved.
    pub fn new(now: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(now)))
    }

    /// Sets the time.
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the time forward by `secs` seconds.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "testing"))]
impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A session's clock, chosen once when the session is built. The system clock is called
/// directly, with no virtual call, and its [`Reading`] is compared with a [`Deadline`] kept as
/// a `SystemTime`, which spares the hot path the conversion of the current time to unix
/// seconds (about as costly as reading the clock itself).
///
/// Measured (issue 13, `cargo bench --bench hot_path`, the three builds run in turn on one
/// machine): `access_token` on one thread at 1.34-1.35x its floor with this clock, 1.79-1.87x
/// with an `Arc<dyn Clock>` read as unix seconds and compared with `i64` seconds, 1.76-1.94x
/// with this enum but `i64` seconds. So the simpler forms cost the hot path a third more.
#[derive(Clone, Debug)]
pub(crate) enum SessionClock {
    /// [`SystemClock`], the default.
    System,
    /// A clock given to the builder.
    Custom(Arc<dyn Clock>),
}

impl SessionClock {
    /// The system clock when `custom` is `None`.
    pub(crate) fn new(custom: Option<Arc<dyn Clock>>) -> Self {
        custom.map_or(SessionClock::System, SessionClock::Custom)
    }

    /// The current time, unix seconds.
    #[inline]
    pub(crate) fn now(&self) -> i64 {
        match self {
            SessionClock::System => SystemClock.now(),
            SessionClock::Custom(clock) => clock.now(),
        }
    }

    /// The current time, as cheaply as this clock gives it.
    #[inline]
    pub(crate) fn read(&self) -> Reading {
        match self {
            SessionClock::System => Reading::System(SystemTime::now()),
            SessionClock::Custom(clock) => Reading::Secs(clock.now()),
        }
    }
}

/// One reading of a [`SessionClock`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reading {
    /// The system time as read.
    System(SystemTime),
    /// Unix seconds from a custom clock.
    Secs(i64),
}

impl Reading {
    /// Whether this reading is before `deadline`: `now < deadline` in unix seconds (a system
    /// time is compared exactly, which gives the same answer for any time after 1970).
    #[inline]
    pub(crate) fn before(self, deadline: &Deadline) -> bool {
        match (self, deadline.system) {
            (Reading::System(now), Some(at)) => now < at,
            (Reading::System(now), None) => unix_secs(now) < deadline.secs,
            (Reading::Secs(now), _) => now < deadline.secs,
        }
    }
}

/// A moment in unix seconds, also kept as a `SystemTime` so that a system clock [`Reading`]
/// is compared with it as it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline {
    secs: i64,
    /// `None` when `SystemTime` cannot hold the moment (the seconds are compared then).
    system: Option<SystemTime>,
}

impl Deadline {
    /// The moment `secs` unix seconds.
    pub(crate) fn at(secs: i64) -> Self {
        let span = Duration::from_secs(secs.unsigned_abs());
        let system = if secs >= 0 {
            UNIX_EPOCH.checked_add(span)
        } else {
            UNIX_EPOCH.checked_sub(span)
        };
        Deadline { secs, system }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800);
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new(100);
        let b = a.clone();
        a.advance(50);
        assert_eq!(b.now(), 150);
        b.set(7);
        assert_eq!(a.now(), 7);
    }

    #[test]
    fn deadlines_on_a_manual_clock_compare_seconds() {
        let manual = ManualClock::new(1_000);
        let clock = SessionClock::new(Some(Arc::new(manual.clone())));
        let deadline = Deadline::at(1_001);
        assert!(clock.read().before(&deadline));
        manual.advance(1);
        assert!(!clock.read().before(&deadline));
        assert_eq!(clock.now(), 1_001);
    }

    #[test]
    fn system_readings_compare_like_their_seconds() {
        let reading = SessionClock::new(None).read();
        let Reading::System(time) = reading else {
            panic!("the default clock is the system clock: {reading:?}");
        };
        let secs = unix_secs(time);
        for deadline in [secs - 1, secs, secs + 1, 0, -86_400, secs + 86_400] {
            assert_eq!(
                reading.before(&Deadline::at(deadline)),
                secs < deadline,
                "{secs} vs {deadline}"
            );
        }
        assert!(reading.before(&Deadline::at(i64::MAX)));
        assert!(!reading.before(&Deadline::at(i64::MIN)));
        // A deadline SystemTime cannot hold falls back to the seconds.
        let unreachable = Deadline {
            secs: secs + 1,
            system: None,
        };
        assert!(reading.before(&unreachable));
        assert!(!reading.before(&Deadline { secs, system: None }));
    }
}
