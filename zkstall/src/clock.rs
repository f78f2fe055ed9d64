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

/// How well this host's wall clock is disciplined, from adjtimex(2) (read-only: modes 0),
/// as NTP daemons (chrony, ntpd, systemd-timesyncd) keep it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClockSync {
    /// The daemon's last measured offset from its reference (µs).
    pub offset_us: i64,
    /// The kernel's bound on the clock's error (µs); 16 s when nobody disciplines it.
    pub maxerror_us: i64,
    /// Its estimated error (µs).
    pub esterror_us: i64,
    /// The clock is marked synchronized (STA_UNSYNC clear and the state is not
    /// TIME_ERROR). False on a host without a time daemon: its wall clock may be off by
    /// anything.
    pub synchronized: bool,
    /// adjtimex's status bits.
    pub status: i32,
}

impl ClockSync {
    pub fn sample() -> Self {
        // SAFETY: timex is plain data; modes 0 only reads.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        let state = unsafe { libc::adjtimex(&mut tx) };
        let nano = tx.status & libc::STA_NANO != 0;
        ClockSync {
            offset_us: if nano { tx.offset / 1000 } else { tx.offset },
            maxerror_us: tx.maxerror,
            esterror_us: tx.esterror,
            synchronized: state >= 0
                && state != libc::TIME_ERROR
                && tx.status & libc::STA_UNSYNC == 0,
            status: tx.status,
        }
    }

    /// How far this host's wall clock may be from true time (ms), as far as it knows:
    /// max error when synchronized; None when it is not (no bound).
    pub fn uncertainty_ms(&self) -> Option<f64> {
        self.synchronized
            .then(|| (self.maxerror_us.max(0) as f64 + self.offset_us.unsigned_abs() as f64) / 1e3)
    }
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
