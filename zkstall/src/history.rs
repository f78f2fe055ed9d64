//! Recent activity, kept for attribution: block requests, off-CPU intervals of the target's
//! threads, throttling pauses and journal commits of the last [`HORIZON`]. When a slow
//! call ends, attribution looks back over its interval. Bounded by time and by count:
//! a flood of block requests sheds the oldest (counted), never grows memory.

use std::collections::VecDeque;

use crate::{clock::MonoNs, enrich::DevId};

/// How far back the history reaches: longer than any stall worth explaining.
pub const HORIZON_NS: u64 = 120_000_000_000;
/// Caps per kind (the oldest entries go first, and are counted).
pub const MAX_IOS: usize = 200_000;
pub const MAX_BLOCKED: usize = 100_000;
pub const MAX_THROTTLES: usize = 50_000;
pub const MAX_COMMITS: usize = 10_000;

/// Who a request is charged to: the dirtier for flusher writeback, else the submitter.
#[derive(Clone, Debug, PartialEq)]
pub struct Party {
    pub pid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Io {
    pub dev: DevId,
    /// Submitter (pid 0: not seen).
    pub pid: u32,
    pub charged: Party,
    pub bytes: u32,
    pub write: bool,
    pub queued: Option<MonoNs>,
    pub issued: Option<MonoNs>,
    pub completed: MonoNs,
}

impl Io {
    /// When the request entered the block layer, as far as is known.
    pub fn start(&self) -> MonoNs {
        self.queued.or(self.issued).unwrap_or(self.completed)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Blocked {
    pub pid: u32,
    pub tid: u32,
    pub thread: String,
    /// ps-style state: D, S, R (preempted while runnable), ...
    pub state: String,
    pub off: MonoNs,
    pub on: MonoNs,
    pub wake: Option<MonoNs>,
    pub syscall: Option<String>,
    pub waker: Option<(u32, u32, String)>,
    pub stack: Vec<String>,
}

impl Blocked {
    /// Run-queue part: woken -> running, or all of it when preempted while runnable.
    pub fn runq(&self) -> (MonoNs, MonoNs) {
        match self.wake {
            Some(w) => (w.max(self.off), self.on),
            None if self.state == "R" => (self.off, self.on),
            None => (self.on, self.on),
        }
    }

    /// Sleeping part (before the wakeup).
    pub fn sleep(&self) -> (MonoNs, MonoNs) {
        match self.wake {
            Some(w) => (self.off, w.min(self.on)),
            None if self.state == "R" => (self.off, self.off),
            None => (self.off, self.on),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Throttle {
    pub pid: u32,
    pub tid: u32,
    pub at: MonoNs,
    pub pause_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    pub dev: DevId,
    pub transaction: u32,
    pub start: MonoNs,
    pub end: MonoNs,
    pub locking_ms: Option<f64>,
    pub flushing_ms: Option<f64>,
    pub logging_ms: Option<f64>,
    pub handles: Option<u32>,
    pub blocks: Option<u32>,
}

#[derive(Default)]
pub struct History {
    pub ios: VecDeque<Io>,
    pub blocked: VecDeque<Blocked>,
    pub throttles: VecDeque<Throttle>,
    pub commits: VecDeque<Commit>,
    /// Entries shed because a cap was reached before the horizon.
    pub shed: u64,
}

fn push<T>(q: &mut VecDeque<T>, cap: usize, v: T, shed: &mut u64) {
    if q.len() >= cap {
        q.pop_front();
        *shed += 1;
    }
    q.push_back(v);
}

fn expire<T>(q: &mut VecDeque<T>, now: MonoNs, at: impl Fn(&T) -> MonoNs) {
    while q.front().is_some_and(|v| now.since(at(v)) > HORIZON_NS) {
        q.pop_front();
    }
}

impl History {
    pub fn io(&mut self, v: Io) {
        let now = v.completed;
        push(&mut self.ios, MAX_IOS, v, &mut self.shed);
        expire(&mut self.ios, now, |v| v.completed);
    }

    pub fn blocked(&mut self, v: Blocked) {
        let now = v.on;
        push(&mut self.blocked, MAX_BLOCKED, v, &mut self.shed);
        expire(&mut self.blocked, now, |v| v.on);
    }

    pub fn throttle(&mut self, v: Throttle) {
        let now = v.at;
        push(&mut self.throttles, MAX_THROTTLES, v, &mut self.shed);
        expire(&mut self.throttles, now, |v| v.at);
    }

    pub fn commit(&mut self, v: Commit) {
        let now = v.end;
        push(&mut self.commits, MAX_COMMITS, v, &mut self.shed);
        expire(&mut self.commits, now, |v| v.end);
    }
}

/// Length of the overlap of [a0, a1) and [b0, b1), in ns.
pub fn overlap(a: (MonoNs, MonoNs), b: (MonoNs, MonoNs)) -> u64 {
    let lo = a.0.max(b.0);
    let hi = a.1.min(b.1);
    hi.since(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floods_shed_the_oldest_and_count_it() {
        let mut h = History::default();
        for i in 0..(MAX_THROTTLES + 10) {
            h.throttle(Throttle {
                pid: 1,
                tid: 1,
                at: MonoNs(i as u64),
                pause_ms: 1,
            });
        }
        assert_eq!(h.throttles.len(), MAX_THROTTLES);
        assert_eq!(h.shed, 10);
        assert_eq!(h.throttles.front().unwrap().at, MonoNs(10));
    }

    #[test]
    fn old_entries_expire_past_the_horizon() {
        let mut h = History::default();
        h.throttle(Throttle {
            pid: 1,
            tid: 1,
            at: MonoNs(1),
            pause_ms: 1,
        });
        h.throttle(Throttle {
            pid: 1,
            tid: 1,
            at: MonoNs(HORIZON_NS + 10),
            pause_ms: 1,
        });
        assert_eq!(h.throttles.len(), 1);
        assert_eq!(h.shed, 0, "expiry is not shedding");
    }

    #[test]
    fn overlaps() {
        assert_eq!(overlap((MonoNs(0), MonoNs(10)), (MonoNs(5), MonoNs(20))), 5);
        assert_eq!(
            overlap((MonoNs(0), MonoNs(10)), (MonoNs(10), MonoNs(20))),
            0
        );
        assert_eq!(overlap((MonoNs(5), MonoNs(6)), (MonoNs(0), MonoNs(20))), 1);
    }
}
