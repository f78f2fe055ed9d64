//! The headline: one sentence an on-call engineer can act on, from the finding and its
//! evidence. It only states what the evidence shows.

use super::{
    Contender, ContenderKind, Span,
    evidence::{Evidence, Gathered, Stage},
    ms,
    rules::{Finding, Verdict},
};

/// `240.2 MB`, `48 KB`, `512 B`: the one size format of every output.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000_000 => format!("{:.2} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.0} KB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

/// `dd (pid 812)`, `java / Snapshot Thread (pid 20 tid 31, same process)`.
fn plural(n: u32, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Others' I/O on a layer: the bytes they moved, and their discards apart (a discard's
/// length is not data moved).
pub fn others_io(le: &super::LayerEvidence) -> String {
    match le.discards_others {
        0 => format!("{} of others' I/O", size(le.bytes_others)),
        n => format!(
            "{} of others' I/O and {n} discard(s) of {}",
            size(le.bytes_others),
            size(le.bytes_discarded)
        ),
    }
}

pub fn who(c: &Contender) -> String {
    match c.kind {
        ContenderKind::Cgroup => c.comm.clone(),
        ContenderKind::Relayed if c.same_process => format!(
            "its own process's I/O (pid {}), relayed by the kernel for cgroup {}",
            c.pid,
            c.cgroup.as_deref().unwrap_or("?")
        ),
        ContenderKind::Relayed => format!(
            "{} (pid {}), relayed by the kernel for cgroup {}",
            c.comm,
            c.pid,
            c.cgroup.as_deref().unwrap_or("?")
        ),
        _ if c.same_process => format!(
            "{} / {} (pid {} tid {}, same process)",
            c.process.as_deref().unwrap_or("the traced process"),
            c.comm,
            c.pid,
            c.tid
        ),
        _ if c.pid == 0 => c.comm.clone(),
        _ => match &c.process {
            Some(p) => format!("{p} / {} (pid {} tid {})", c.comm, c.pid, c.tid),
            None => format!("{} (pid {})", c.comm, c.pid),
        },
    }
}

fn stage_words(s: Stage) -> &'static str {
    match s {
        Stage::OnCpu => "on CPU",
        Stage::RunQueue => "waiting for a CPU",
        Stage::AfterReturn => "asleep after the syscall returned",
        Stage::JournalWait => "waiting for the journal",
        Stage::DeviceQueue => "waiting behind queued I/O",
        Stage::DeviceService => "waiting for its own I/O at the device",
        Stage::WritebackWait => "waiting for writeback with nothing of its own in flight",
        Stage::QueueHeld => {
            "with its own requests queued in the block layer while the device had none (held above the device)"
        }
        Stage::IoThrottle => "held back by its cgroup's I/O limit",
        Stage::DirtyThrottle => "throttled for dirty pages",
        Stage::Reclaim => "reclaiming memory",
        Stage::LowSpace => "forcing writeback for free space",
        Stage::FsLock => "waiting for a filesystem lock",
        Stage::OtherD => "in uninterruptible sleep",
        Stage::Sleep => "sleeping",
        Stage::ShortDeviceWaits => "in short waits for its own I/O",
        Stage::ShortWaits => "in short uninterruptible waits",
        Stage::ShortSleeps => "in short sleeps",
        Stage::Unaccounted => "in time no signal covers",
    }
}

pub fn headline(call: &Span, g: &Gathered, f: &Finding) -> String {
    let dur = ms(g.dur_ns);
    let sc = call.syscall;
    let ev = &g.ev;
    let layer = f.layer.and_then(|i| ev.layers.get(i));
    let device = call
        .device
        .clone()
        .or_else(|| ev.disk.clone())
        .unwrap_or_else(|| "the device".into());
    let so_far = if call.running { " so far" } else { "" };
    match f.verdict {
        Verdict::HostFreeze => {
            let hf = ev.host_freeze.clone().unwrap_or_default();
            format!(
                "the whole host stopped for {:.0} ms of this {dur:.0} ms{so_far} {sc}: none of its {} CPUs ran its {} Hz heartbeat for {:.0} ms (a VM paused by its hypervisor: a stun, a live migration, a snapshot); its disks did not stop on their own",
                hf.frozen_ms,
                hf.cpus,
                zkstall_common::HEARTBEAT_HZ,
                hf.longest_ms
            )
        }
        Verdict::DeviceStall => {
            let Some(l) = layer else {
                return format!("a disk stopped completing I/O during this {dur:.0} ms {sc}");
            };
            let mut s = format!(
                "{} stopped completing I/O for {:.0} ms of this {dur:.0} ms{so_far} {sc} ({} request(s) in flight, {} completion(s))",
                l.disk, l.longest_completion_gap_ms, l.inflight_max, l.completions
            );
            if let Some(above) = ev.layers.iter().find(|a| a.depth < l.depth) {
                s.push_str(&format!("; {} waited on it", above.disk));
            }
            let below: Vec<&super::LayerEvidence> =
                ev.layers.iter().filter(|b| b.depth > l.depth).collect();
            if !below.is_empty() {
                let busy = below
                    .iter()
                    .any(|b| b.completions > 0 || b.inflight_at_end > 0);
                s.push_str(&format!(
                    "; below it {} {}",
                    below
                        .iter()
                        .map(|b| format!(
                            "{} ({} completion(s), up to {} in flight)",
                            b.disk, b.completions, b.inflight_max
                        ))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if busy {
                        "kept completing: the layer itself was blocked (its backing file's filesystem frozen or stuck?)"
                    } else {
                        "saw nothing to complete: the layer itself was blocked (its backing file's filesystem frozen or stuck?)"
                    }
                ));
            }
            if l.timeouts > 0 || l.requeues > 0 {
                // What a disk that stops says when its driver gives up on a command: the
                // SCSI layer's 30 s timeout, an NVMe controller reset.
                s.push_str(&format!(
                    "; {} timed out and {} requeued there (a command timeout in the driver: SCSI's default is 30 s)",
                    plural(l.timeouts, "request"),
                    plural(l.requeues, "request")
                ));
            } else if l.errors > 0 {
                s.push_str(&format!("; {} failed there", plural(l.errors, "request")));
            }
            if f.via == Some("journal")
                && let Some(j) = &ev.journal
            {
                s.push_str(&format!(
                    "; the {sc} waited on journal commit {}",
                    j.transaction
                ));
            }
            s
        }
        Verdict::DeviceContention => {
            let Some(l) = layer else {
                return format!("the disk was busy with others' I/O during this {dur:.0} ms {sc}");
            };
            let top = f
                .layer
                .and_then(|i| g.contenders_by_layer.get(i))
                .and_then(|c| c.first())
                .map(who)
                .unwrap_or_else(|| "others".into());
            match (f.via, &ev.journal) {
                (Some("journal"), Some(j)) if f.chain.iter().any(|l| l.what == "backing_flush") => {
                    let bw = j.backing_writers.as_ref();
                    let first = bw.and_then(|b| b.contenders.first());
                    let top = first.map(who).unwrap_or_else(|| "others".into());
                    let all = bw.map_or(0, |b| b.bytes_others);
                    // The top writer's own bytes; everyone's when there were several.
                    let wrote = match (first, bw) {
                        (Some(c), Some(b)) if b.contenders.len() > 1 || c.bytes < all => format!(
                            "{} ({} from {} writers)",
                            size(c.bytes),
                            size(all),
                            b.contenders.len().max(2)
                        ),
                        _ => size(all),
                    };
                    format!(
                        "{top} wrote {wrote} to {} in the {:.0} s before: this {dur:.0} ms {sc} waited for journal commit {} ({:.0} ms), whose flush of {} had to write that data back first",
                        bw.map_or("the disk", |b| b.disk.as_str()),
                        bw.map_or(0.0, |b| b.window_ms / 1e3),
                        j.transaction,
                        j.duration_ms,
                        bw.map_or("the disk", |b| b.disk.as_str()),
                    )
                }
                (Some("journal"), Some(j)) if f.layer.is_some_and(|i| i > 0) => {
                    let above = j
                        .disk_during
                        .as_ref()
                        .map_or("its disk", |d| d.disk.as_str());
                    format!(
                        "{top} kept {} busy under {above} ({}): this {dur:.0} ms {sc} waited for journal commit {} ({:.0} ms), whose writes to {above} waited on {}",
                        l.disk,
                        others_io(l),
                        j.transaction,
                        j.duration_ms,
                        l.disk
                    )
                }
                (Some("journal"), Some(j)) => {
                    let top = g
                        .journal_contenders()
                        .first()
                        .map(who)
                        .unwrap_or_else(|| "others".into());
                    let during = j.disk_during.as_ref().unwrap_or(l);
                    format!(
                        "{top} kept {} busy ({}): this {dur:.0} ms {sc} waited for journal commit {} ({:.0} ms), whose writes queued behind it",
                        during.disk,
                        others_io(during),
                        j.transaction,
                        j.duration_ms
                    )
                }
                (Some("journal"), None) => format!(
                    "{top} kept {} busy ({}): this {dur:.0} ms {sc} waited {:.0} ms for the filesystem's log{}, whose writes queued behind it",
                    l.disk,
                    others_io(l),
                    ms(g.journal_ns),
                    ev.wait_frame
                        .as_ref()
                        .map(|f| format!(" (at {f})"))
                        .unwrap_or_default()
                ),
                _ => format!(
                    "{top} kept {} busy during this {dur:.0} ms {sc}: {} vs {} of its own{}",
                    l.disk,
                    others_io(l),
                    size(l.bytes_thread),
                    if f.via == Some("block_queue") {
                        " (it was held back in the block layer)"
                    } else {
                        ""
                    }
                ),
            }
        }
        Verdict::JournalWait => {
            let jw = ms(g.journal_ns);
            let detail = match &ev.journal {
                Some(j) => {
                    let mut phases = Vec::new();
                    if let Some(v) = j.flushing_ms.filter(|v| *v >= 1.0) {
                        phases.push(format!("{v:.0} ms flushing ordered data"));
                    }
                    if let Some(v) = j.logging_ms.filter(|v| *v >= 1.0) {
                        phases.push(format!("{v:.0} ms writing the journal"));
                    }
                    if let Some(v) = j.locking_ms.filter(|v| *v >= 1.0) {
                        phases.push(format!("{v:.0} ms waiting for running handles"));
                    }
                    // A commit that began well into the wait: say so, and whether its
                    // thread was kept from the CPU meanwhile (when traced).
                    let late = match (j.start_delay_ms, j.thread_runq_before_ms) {
                        (Some(d), rq) if d >= 1.0 && d * 4.0 >= jw => format!(
                            "; it began {d:.0} ms after this call started waiting for it{}",
                            match rq {
                                Some(rq) => format!(
                                    ", its thread runnable without a CPU for {rq:.0} ms of that"
                                ),
                                None => String::new(),
                            }
                        ),
                        _ => String::new(),
                    };
                    format!(
                        " (commit {} took {:.0} ms{}{}{late})",
                        j.transaction,
                        j.duration_ms,
                        if phases.is_empty() { "" } else { ": " },
                        phases.join(", ")
                    )
                }
                None => String::new(),
            };
            format!(
                "waited {jw:.0} ms of this {dur:.0} ms{so_far} {sc} for a journal commit on {device}{detail}"
            )
        }
        Verdict::DirtyThrottle => format!(
            "paused {:.0} ms of this {dur:.0} ms {sc} in balance_dirty_pages: too many dirty pages on the system",
            ev.throttle_pause_ms.max(ms(g.stage(Stage::DirtyThrottle)))
        ),
        Verdict::FsBlocked => format!(
            "blocked {:.0} ms of this {dur:.0} ms{so_far} {sc} in the filesystem with no I/O of its own in flight (frozen filesystem or fs lock){}",
            ms(g.stage(Stage::FsLock)),
            ev.wait_frame
                .as_ref()
                .map(|f| format!(" at {f}"))
                .unwrap_or_default()
        ),
        Verdict::CpuStarvation if f.via == Some("journal") => {
            let j = ev.journal.as_ref();
            let (rq, span, before) = j.map_or((0.0, 0.0, 0.0), |j| {
                super::rules::journal_thread_starved(g, j, &super::rules::Thresholds::DEFAULT)
            });
            let commit = j.map_or(0.0, |j| j.duration_ms);
            let delay = span - commit;
            format!(
                "this {dur:.0} ms {sc} waited for journal commit {}, whose thread {} was runnable but not running for {rq:.0} ms of {}: the CPU was busy with others",
                j.map_or(0, |j| j.transaction),
                j.and_then(|j| j.thread.clone()).unwrap_or_default(),
                if before > 0.0 {
                    format!(
                        "the {span:.0} ms from this call's wait to the commit's end (the commit began {delay:.0} ms into the wait and took {commit:.0} ms)"
                    )
                } else {
                    format!("its {commit:.0} ms")
                }
            )
        }
        Verdict::CpuStarvation if f.via == Some("jvm_pause") => format!(
            "{sc} returned in {:.0} ms, then the JVM held the thread {:.0} ms in a pause ({} other thread(s) stopped) that could not end: its threads were runnable but not running for {:.0} ms of it; the CPU was busy with others",
            ms(g.syscall_end.since(call.start)),
            ms(g.stage(Stage::AfterReturn)),
            ev.other_threads_stopped.unwrap_or(0),
            ev.after_others_runq_ms.unwrap_or(0.0)
        ),
        Verdict::CpuStarvation => format!(
            "runnable but not running for {:.0} ms of this {dur:.0} ms {sc}{}: the CPU was busy with others",
            ms(g.stage(Stage::RunQueue)),
            match f.via {
                Some("after_return") => " (mostly right after it returned)",
                Some("before_entry") => {
                    " (mostly right before it entered the syscall, where its caller's clock may have been running)"
                }
                _ => "",
            }
        ),
        Verdict::JvmPause => {
            let pause = jvm_pause_headline(call, g, sc);
            match &ev.pause_holder {
                Some(p) => format!(
                    "{pause}; it could not end while {} was blocked in the kernel (D) for {:.0} ms of it{}{}, waiting on {}",
                    p.thread,
                    p.d_ms,
                    p.syscall
                        .as_deref()
                        .map(|s| format!(" in {s}()"))
                        .unwrap_or_else(|| " outside a syscall (a page fault)".into()),
                    p.wait_frame
                        .as_deref()
                        .map(|w| format!(" at {w}"))
                        .unwrap_or_default(),
                    p.site
                ),
                None => pause,
            }
        }
        Verdict::OwnIo => {
            let l = layer.or(ev.layers.first());
            format!(
                "writing its own {} on {}{}",
                size(ev.bytes_target),
                l.map_or(device.as_str(), |l| l.disk.as_str()),
                match (&ev.latency_ms, l.and_then(|l| l.usual_p50_ms)) {
                    (Some(p), Some(u)) => format!(
                        " at the disk's usual speed (latency p50 {:.2} ms, usually {u:.2} ms; max {:.2} ms)",
                        p.p50, p.max
                    ),
                    (Some(p), None) =>
                        format!(" (latency p50 {:.2} ms, max {:.2} ms)", p.p50, p.max),
                    _ => String::new(),
                }
            )
        }
        Verdict::IoThrottled => {
            let Some(lim) = &ev.io_limit else {
                return format!("this {dur:.0} ms {sc} was held back by an I/O limit");
            };
            let l = &lim.limit;
            let mut limits = Vec::new();
            if let Some(v) = l.wbps {
                limits.push(format!("write {}/s", size(v)));
            }
            if let Some(v) = l.wiops {
                limits.push(format!("write {v} IOPS"));
            }
            if let Some(v) = l.rbps {
                limits.push(format!("read {}/s", size(v)));
            }
            if let Some(v) = l.riops {
                limits.push(format!("read {v} IOPS"));
            }
            format!(
                "cgroup {}'s I/O limit on {} ({}, {}) held this {dur:.0} ms{so_far} {sc} back: its cgroup wrote {}/s in {:.0} IOPS during it ({:.0}% of the limit), and it waited {:.0} ms for its own I/O",
                if l.cgroup.is_empty() { "/" } else { &l.cgroup },
                lim.disk_name,
                limits.join(", "),
                if l.v1 { "blkio.throttle" } else { "io.max" },
                size(lim.write_bps as u64),
                lim.write_iops,
                lim.utilization * 100.0,
                ms(g.stage(Stage::WritebackWait)
                    + g.stage(Stage::IoThrottle)
                    + g.stage(Stage::DeviceQueue)
                    + g.stage(Stage::DeviceService)
                    + g.stage(Stage::ShortDeviceWaits))
            )
        }
        Verdict::MemoryReclaim if f.via == Some("jvm_pause") => {
            let r = ev.after_others_reclaim.as_ref();
            format!(
                "{sc} returned in {:.0} ms{}, then the JVM held the thread {:.0} ms in a pause ({} other thread(s) stopped) that could not end: {} of its threads were reclaiming memory for {:.0} ms of it ({}): {}",
                ms(g.syscall_end.since(call.start)),
                if ev.reclaim_ms >= 1.0 {
                    format!(
                        " (after reclaiming memory itself for {:.0} ms)",
                        ev.reclaim_ms
                    )
                } else {
                    String::new()
                },
                ms(g.stage(Stage::AfterReturn)),
                ev.other_threads_stopped.unwrap_or(0),
                r.map_or(0, |r| r.count),
                r.map_or(0.0, |r| r.ms),
                r.map(|r| r.threads.join(", ")).unwrap_or_default(),
                reclaim_why(ev, r.map(|r| r.memcg))
            )
        }
        Verdict::MemoryReclaim => {
            let r = ms(g.stage(Stage::Reclaim));
            let why = reclaim_why(ev, ev.memcg_reclaim);
            format!(
                "this {dur:.0} ms{so_far} {sc} spent {r:.0} ms reclaiming memory before it could go on: {why}"
            )
        }
        Verdict::LowSpace => format!(
            "this {dur:.0} ms{so_far} {sc} waited {:.0} ms for {} forced by low free space on {device}: the filesystem is nearly full{}{}",
            ms(g.stage(Stage::LowSpace)),
            if ev.stack.iter().any(|f| f.contains("should_retry_alloc"))
                && ev.low_space_writeback.is_none()
            {
                "a journal commit (an allocation retried after ENOSPC)"
            } else {
                "writeback"
            },
            ev.low_space_writeback
                .as_ref()
                .map(|w| format!(
                    "; it queued writeback of {} pages for free space itself ({} time(s))",
                    w.nr_pages, w.queued
                ))
                .unwrap_or_default(),
            ev.wait_frame
                .as_ref()
                .map(|f| format!(" (at {f})"))
                .unwrap_or_default()
        ),
        Verdict::Unknown => unknown(call, g, f, dur),
    }
}

/// What an honest catch-all can say: where the time went as far as it is known, the
/// frame it waited at, and what is missing.
fn unknown(call: &Span, g: &Gathered, f: &Finding, dur: f64) -> String {
    let sc = call.syscall;
    let ev = &g.ev;
    let mut s = match f.stage {
        Some(Stage::Unaccounted) | None => format!(
            "no traced signal accounts for {:.0} ms of this {dur:.0} ms {sc}",
            ms(g.stage(Stage::Unaccounted))
        ),
        Some(st) => format!(
            "{:.0} ms of this {dur:.0} ms {sc} {}, with no cause the signals can name",
            ms(g.stage(st)),
            stage_words(st)
        ),
    };
    if let Some(frame) = &ev.wait_frame {
        s.push_str(&format!("; it waited at {frame}"));
    }
    if let Some(link) = f.chain.iter().find(|k| k.what == "pause_open") {
        s.push_str(&format!("; {}", link.detail));
    }
    if let Some(l) = ev.layers.first() {
        if l.no_io && l.watched && call.start_bound {
            // Requests issued before the probes existed are seen only as they complete.
            s.push_str(&format!(
                "; {} completed no block I/O since tracing began (requests in flight before then are seen only as they complete)",
                l.disk
            ));
        } else if l.no_io && l.watched {
            s.push_str(&format!("; {} saw no block I/O during it", l.disk));
        } else if let Some(p) = &l.latency_ms {
            match l.usual_p50_ms {
                Some(u) if p.p50 > u * super::rules::Thresholds::DEFAULT.slow_factor => {
                    s.push_str(&format!(
                        "; {} answered slowly (p50 {:.2} ms, usually {:.2} ms) without stalling",
                        l.disk, p.p50, u
                    ))
                }
                None if p.p50 > super::rules::Thresholds::DEFAULT.slow_abs_ms => {
                    s.push_str(&format!(
                        "; {} answered slowly (p50 {:.2} ms) without stalling",
                        l.disk, p.p50
                    ))
                }
                _ => {}
            }
        }
    }
    // A commit's loop device the disk under it held for part of its pause, that disk busy
    // with others' I/O: why "slow on its own" was not said.
    if let Some((during, below)) = super::rules::busy_below(g, &super::rules::Thresholds::DEFAULT)
        && !super::rules::held_from_below(during)
    {
        s.push_str(&format!(
            "; {} under {} carried {} over the call, and held the commit's writes for {:.0} ms of {}'s {:.0} ms pause: too little to name them, enough that the commit was not slow on its own",
            below.disk,
            during.disk,
            others_io(below),
            during.backing_held_ms,
            during.disk,
            during.longest_completion_gap_ms
        ));
    }
    // A loop layer that paused waiting on the disk under it: say so, and how.
    for l in &ev.layers {
        if super::rules::held_from_below(l) {
            let below = ev
                .layers
                .iter()
                .find(|b| b.depth == l.depth + 1)
                .map_or("the disk under it", |b| b.disk.as_str());
            if l.backing_throttled_ms > l.backing_busy_ms {
                s.push_str(&format!(
                    "; {} completed nothing for {:.0} ms while writes to its backing file were dirty-throttled on {below} ({} paused longest)",
                    l.disk,
                    l.longest_completion_gap_ms,
                    l.backing_throttled.as_deref().unwrap_or("?")
                ));
            } else {
                s.push_str(&format!(
                    "; {} completed nothing for {:.0} ms while {below} under it was busy ({:.0} ms with requests in flight)",
                    l.disk, l.longest_completion_gap_ms, l.backing_busy_ms
                ));
            }
            break;
        }
    }
    if !ev.incomplete.is_empty() {
        s.push_str(&format!("; incomplete: {}", ev.incomplete.join("; ")));
    }
    s
}

/// The JVM pause itself: how long the call took, then how long the thread was held, in
/// which safepoints (HotSpot's markers) or with how many threads stopped.
fn jvm_pause_headline(call: &Span, g: &Gathered, sc: &str) -> String {
    let ev = &g.ev;
    match &ev.safepoint {
        Some(s) => format!(
            "{sc} returned in {:.0} ms, then the thread waited {:.0} ms before its caller ran again, {:.0} ms of it in {} JVM safepoint{} (the longest {:.0} ms{}{}){}",
            ms(g.syscall_end.since(call.start)),
            ms(g.stage(Stage::AfterReturn)),
            s.overlap_ms,
            if s.count == 1 {
                "a".to_string()
            } else {
                s.count.to_string()
            },
            if s.count == 1 { "" } else { "s" },
            s.longest_ms,
            s.op.as_deref()
                .map(|o| format!(", {o}"))
                .unwrap_or_default(),
            match s.gc_full {
                Some(true) => ", a full GC",
                Some(false) => ", a GC",
                None => "",
            },
            if s.by_zkstall {
                ": zkstall's own (its one jcmd Thread.print, naming threads)"
            } else {
                ""
            }
        ),
        None => format!(
            "{sc} returned in {:.0} ms, then the thread slept {:.0} ms before its caller ran again, with {} other thread(s) of the JVM stopped too: a JVM pause (safepoint or GC)",
            ms(g.syscall_end.since(call.start)),
            ms(g.stage(Stage::AfterReturn)),
            ev.other_threads_stopped.unwrap_or(0)
        ),
    }
}

/// Why memory had to be reclaimed: the memory cgroup's limit when it is known, else
/// whether it was direct reclaim (the system short of memory).
fn reclaim_why(ev: &Evidence, memcg: Option<bool>) -> String {
    match (&ev.mem_limit, memcg) {
        (Some(l), _) => format!(
            "its memory cgroup {} is at its limit ({}{})",
            l.cgroup,
            l.max
                .or(l.high)
                .map(|m| format!("limit {}", size(m)))
                .unwrap_or_default(),
            l.usage
                .map(|u| format!(", using {}", size(u)))
                .unwrap_or_default()
        ),
        (None, Some(false)) => "the system is short of memory (direct reclaim)".into(),
        _ => "memory reclaim".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_one_format() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(48_000), "48 KB");
        assert_eq!(size(240_156_672), "240.2 MB");
        assert_eq!(size(3_000_000_000), "3.00 GB");
    }
}
