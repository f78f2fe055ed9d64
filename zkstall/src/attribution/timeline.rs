//! The blocked-thread timeline around a call: the calling thread, the process's threads
//! that spent a noticeable part of the call in D or waiting for a CPU, and those that
//! waited on the caller or woke it (ZooKeeper's request pipeline stuck behind the
//! SyncThread). One line per thread, its states merged; idle sleepers (asleep before the
//! call and through it, related to nothing) are left out and counted.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Span, evidence::blocked_in, ms};
use crate::{
    decode::SchedState,
    history::{Blocked, History, WakerInfo, overlap},
};

/// One thread of the process during the call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineEntry {
    pub tid: u32,
    pub thread: String,
    /// The state it spent most of its off-CPU time in.
    pub state: String,
    /// Its first off-CPU interval in the call began here.
    pub start_ns: u64,
    /// Off CPU during the call, all states (ms).
    pub duration_ms: f64,
    /// The syscall it spent that time in, mostly.
    pub syscall: Option<String>,
    /// Who woke it from its longest wait.
    pub waker: Option<String>,
    /// Time by state: `D 4044.8 ms, R 0.3 ms`.
    pub states: String,
    pub role: Role,
}

/// Why a thread is on the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The thread that made the call.
    Caller,
    /// It woke the calling thread.
    WokeCaller,
    /// The caller woke it: it waited on the call (ZooKeeper's request pipeline behind its
    /// SyncThread).
    WaitedOnCaller,
    /// In D for a noticeable part of the call.
    Blocked,
    /// Runnable without a CPU for a noticeable part of the call.
    Runnable,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::WokeCaller => "woke_caller",
            Role::WaitedOnCaller => "waited_on_caller",
            Role::Blocked => "blocked",
            Role::Runnable => "runnable",
        }
    }
}

const MAX_TIMELINE: usize = 20;

pub fn timeline(call: &Span, h: &History) -> (Vec<TimelineEntry>, u32) {
    let win = (call.start, call.end);
    let dur = call.end.since(call.start).max(1);
    let mut per: BTreeMap<u32, Vec<&Blocked>> = BTreeMap::new();
    for b in blocked_in(h, call.pid, win) {
        per.entry(b.tid).or_default().push(b);
    }
    // Who woke the caller (thread ids of its own process).
    let caller_wakers: Vec<u32> = per
        .get(&call.tid)
        .map(|v| {
            v.iter()
                .filter_map(|b| match &b.waker {
                    Some(WakerInfo::Task { pid, tid, .. }) if *pid == call.pid => Some(*tid),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut omitted = 0u32;
    for (tid, mut bs) in per {
        bs.sort_by_key(|b| b.off);
        let mut by_state: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut total = 0u64;
        let mut syscalls: BTreeMap<String, u64> = BTreeMap::new();
        let mut longest: Option<(&Blocked, u64)> = None;
        for b in &bs {
            let o = overlap((b.off, b.on), win);
            total += o;
            *by_state.entry(b.state.letter()).or_default() += o;
            if let Some(s) = &b.syscall {
                *syscalls.entry(s.clone()).or_default() += o;
            }
            if longest.is_none_or(|(_, l)| o > l) {
                longest = Some((b, o));
            }
        }
        let woken_by_caller = bs
            .iter()
            .any(|b| matches!(&b.waker, Some(WakerInfo::Task { tid: t, .. }) if *t == call.tid));
        let d = by_state.get("D").copied().unwrap_or(0);
        let r = by_state.get("R").copied().unwrap_or(0);
        let role = if tid == call.tid {
            Role::Caller
        } else if caller_wakers.contains(&tid) {
            Role::WokeCaller
        } else if woken_by_caller && total * 20 >= dur {
            Role::WaitedOnCaller
        } else if d * 10 >= dur {
            Role::Blocked
        } else if r * 10 >= dur {
            Role::Runnable
        } else {
            omitted += 1;
            continue;
        };
        let (state, _) = by_state
            .iter()
            .max_by_key(|(_, v)| **v)
            .map(|(k, v)| (*k, *v))
            .unwrap_or(("?", 0));
        let states = by_state
            .iter()
            .rev()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k} {:.1} ms", ms(*v)))
            .collect::<Vec<_>>()
            .join(", ");
        let first = bs.first().map(|b| b.off.0.max(call.start.0)).unwrap_or(0);
        let thread = bs
            .iter()
            .map(|b| b.thread.clone())
            .find(|t| !t.is_empty())
            .unwrap_or_default();
        out.push(TimelineEntry {
            tid,
            thread,
            state: state.to_string(),
            start_ns: first,
            duration_ms: ms(total),
            syscall: syscalls.into_iter().max_by_key(|(_, v)| *v).map(|(k, _)| k),
            waker: longest.and_then(|(b, _)| b.waker.as_ref().map(|w| w.label())),
            states,
            role,
        });
    }
    // The calling thread first, then by time off CPU.
    out.sort_by(|a, b| {
        (b.role == Role::Caller)
            .cmp(&(a.role == Role::Caller))
            .then(b.duration_ms.total_cmp(&a.duration_ms))
    });
    if out.len() > MAX_TIMELINE {
        omitted += (out.len() - MAX_TIMELINE) as u32;
        out.truncate(MAX_TIMELINE);
    }
    let _ = SchedState::Runnable;
    (out, omitted)
}
