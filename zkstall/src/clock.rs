//! One clock end to end: CLOCK_MONOTONIC nanoseconds, the clock of `bpf_ktime_get_ns`.
//! Wall-clock times are derived from it through a mapping sampled at start-up, so that
//! recordings from several hosts can be lined up.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// CLOCK_MONOTONIC nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonoNs(pub u64);

impl MonoNs {
    /// Now, on CLOCK_MONOTONIC.
    pub fn now() -> Self {
        MonoNs(clock_ns(libc::CLOCK_MONOTONIC))
    }

    /// Nanoseconds from `earlier` to `self` (0 if `earlier` is later).
    pub fn since(self, earlier: MonoNs) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids used here always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The mapping from CLOCK_MONOTONIC to wall-clock time (CLOCK_REALTIME).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// realtime_ns - monotonic_ns at the moment of sampling.
    pub offset_ns: i128,
}

impl WallClock {
    /// Samples the offset a few times and keeps the tightest bracket, so the error is the
    /// cost of one clock_gettime call (well under a microsecond).
    pub fn sample() -> Self {
        let mut best: Option<(u64, i128)> = None;
        for _ in 0..5 {
            let m1 = clock_ns(libc::CLOCK_MONOTONIC);
            let r = clock_ns(libc::CLOCK_REALTIME);
            let m2 = clock_ns(libc::CLOCK_MONOTONIC);
            let width = m2 - m1;
            let offset = r as i128 - (m1 as i128 + (width / 2) as i128);
            if best.is_none_or(|(w, _)| width < w) {
                best = Some((width, offset));
            }
        }
        WallClock {
            offset_ns: best.map_or(0, |(_, o)| o),
        }
    }

    /// Unix time in nanoseconds of a monotonic instant.
    pub fn unix_ns(&self, t: MonoNs) -> i128 {
        t.0 as i128 + self.offset_ns
    }

    /// Unix time in whole milliseconds of a monotonic instant.
    pub fn unix_ms(&self, t: MonoNs) -> i64 {
        (self.unix_ns(t) / 1_000_000) as i64
    }

    /// The monotonic instant as a `SystemTime` (for formatting).
    pub fn system_time(&self, t: MonoNs) -> SystemTime {
        let ns = self.unix_ns(t);
        if ns >= 0 {
            UNIX_EPOCH + Duration::from_nanos(ns as u64)
        } else {
            UNIX_EPOCH
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_maps_now_to_now() {
        let wc = WallClock::sample();
        let mono = MonoNs::now();
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        let mapped = wc.unix_ns(mono);
        assert!(
            (mapped - real).abs() < 5_000_000,
            "mapped {mapped} vs real {real}"
        );
    }

    #[test]
    fn since_saturates() {
        assert_eq!(MonoNs(5).since(MonoNs(9)), 0);
        assert_eq!(MonoNs(9).since(MonoNs(5)), 4);
    }
}
