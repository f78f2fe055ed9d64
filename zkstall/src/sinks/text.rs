//! Human-readable lines: one per call, with the same facts as the JSON record.

use std::{
    io::{self, Write},
    time::{Duration, UNIX_EPOCH},
};

use super::{CallRecord, EventRecord, Sink, Summary};

pub struct TextSink<W: Write> {
    w: W,
    wall: Option<crate::clock::WallClock>,
}

impl<W: Write> TextSink<W> {
    pub fn new(w: W) -> Self {
        TextSink { w, wall: None }
    }
}

static LOCALTIME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--localtime`: text prints wall-clock times in the host's time zone from now on.
pub fn set_localtime(on: bool) {
    LOCALTIME.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// A wall-clock instant for people, the one format of every text output: UTC
/// (`2026-11-24T18:40:01.123Z`), or with `--localtime` the host's zone with its offset
/// (`2026-11-24T19:40:01.123+01:00`).
pub fn wall(ms: i64) -> String {
    if LOCALTIME.load(std::sync::atomic::Ordering::Relaxed)
        && let Some(s) = local(ms)
    {
        return s;
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Whether `--localtime` is on.
pub fn localtime() -> bool {
    LOCALTIME.load(std::sync::atomic::Ordering::Relaxed)
}

/// The host's UTC offset (seconds) at Unix time `secs`.
pub fn local_offset_s(secs: i64) -> i64 {
    let t = secs as libc::time_t;
    // SAFETY: tm is plain data; localtime_r fills it (or returns null).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::localtime_r(&t, &mut tm) };
    if rc.is_null() { 0 } else { tm.tm_gmtoff }
}

fn local(ms: i64) -> Option<String> {
    let secs = ms.div_euclid(1000) as libc::time_t;
    // SAFETY: tm is plain data; localtime_r fills it from `secs` (reading TZ and
    // /etc/localtime) and returns null on failure.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::localtime_r(&secs, &mut tm) };
    if rc.is_null() {
        return None;
    }
    let off = tm.tm_gmtoff / 60;
    let (sign, off) = if off < 0 { ('-', -off) } else { ('+', off) };
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{sign}{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        ms.rem_euclid(1000),
        off / 60,
        off % 60
    ))
}

pub fn format_call(r: &CallRecord) -> String {
    let mut s = format!(
        "{} {:<15} {:>10.3} ms  {} (pid {} tid {})",
        wall(r.start_unix_ms),
        r.syscall,
        r.duration_ms,
        if r.thread.is_empty() { "?" } else { &r.thread },
        r.pid,
        r.tid,
    );
    if let Some(fd) = r.fd {
        s.push_str(&format!(" fd {fd}"));
    }
    if let Some(p) = &r.path {
        s.push_str(&format!(" {p}"));
    }
    match (&r.device, &r.dev) {
        (Some(name), Some(dev)) => s.push_str(&format!(" on {name} ({dev})")),
        (None, Some(dev)) => s.push_str(&format!(" on {dev}")),
        _ => {}
    }
    if let Some(disk) = &r.disk
        && r.device.as_deref() != Some(disk.as_str())
    {
        s.push_str(&format!(" disk {disk}"));
    }
    if let Some(ret) = r.ret
        && ret < 0
    {
        let err = io::Error::from_raw_os_error((-ret) as i32);
        s.push_str(&format!(" failed: {err}"));
    }
    if r.revised {
        s.push_str("  [STILL RUNNING: the verdict so far changed]");
    } else if r.in_progress {
        s.push_str("  [STILL RUNNING: crossed the threshold]");
    }
    if r.unfinished {
        s.push_str("  [still running when tracing ended]");
    }
    if r.start_bound {
        s.push_str("  [running since before tracing began: at least this long]");
    }
    if let Some(visible) = r.visible_ms {
        let parts: Vec<String> = [
            r.before_ms
                .map(|b| format!("+{b:.3} ms preempted right before the entry")),
            r.after_ms
                .map(|a| format!("+{a:.3} ms before the thread ran again")),
        ]
        .into_iter()
        .flatten()
        .collect();
        s.push_str(&format!(
            "  ({}: {visible:.3} ms as its caller saw it)",
            parts.join(", ")
        ));
    }
    if let Some(why) = &r.why {
        s.push_str(&explanation(why));
    }
    s
}

/// The indented block under a call: headline, chain, time by stage, devices, contenders,
/// thread timeline.
fn explanation(w: &crate::attribution::Explanation) -> String {
    use crate::attribution::render::size;
    let e = &w.evidence;
    let mut s = format!(
        "\n    why: [{}{}] {}",
        w.verdict.name(),
        w.via.map(|v| format!(" via {v}")).unwrap_or_default(),
        w.headline
    );
    if w.chain.len() > 1 {
        let links: Vec<String> = w
            .chain
            .iter()
            .skip(1)
            .map(|l| format!("{} ({:.0} ms)", l.detail, l.duration_ms))
            .collect();
        s.push_str(&format!("\n    chain: {}", links.join(" -> ")));
    }
    if !w.stages.is_empty() {
        let mut st: Vec<(&&str, &f64)> = w.stages.iter().collect();
        st.sort_by(|a, b| b.1.total_cmp(a.1));
        let parts: Vec<String> = st.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
        s.push_str(&format!("\n    time (ms): {}", parts.join(", ")));
    }
    for l in &e.layers {
        s.push_str(&format!(
            "\n    {}{}: {}",
            "  ".repeat(l.depth as usize),
            l.disk,
            if !l.watched {
                "not watched".to_string()
            } else if l.no_io {
                "no block I/O during the call".to_string()
            } else {
                let mut d = format!(
                    "{} completion(s), up to {} in flight, longest gap {:.1} ms",
                    l.completions, l.inflight_max, l.longest_completion_gap_ms
                );
                if let Some(p) = &l.latency_ms {
                    d.push_str(&format!(
                        ", latency p50 {:.2} p99 {:.2} max {:.2} ms",
                        p.p50, p.p99, p.max
                    ));
                }
                d.push_str(&format!(
                    "; {} its own, {} others'",
                    size(l.bytes_thread),
                    size(l.bytes_others)
                ));
                if l.discards_others > 0 {
                    d.push_str(&format!(
                        " and {} discard(s) of {}",
                        l.discards_others,
                        size(l.bytes_discarded)
                    ));
                }
                if l.bytes_other_partitions > 0 {
                    d.push_str(&format!(
                        " ({} on other partitions)",
                        size(l.bytes_other_partitions)
                    ));
                }
                if l.bytes_journal > 0 {
                    d.push_str(&format!(", {} journal", size(l.bytes_journal)));
                }
                if !l.complete {
                    d.push_str(" [history incomplete]");
                }
                d
            }
        ));
    }
    if e.throttle_pause_ms > 0.0 {
        s.push_str(&format!(
            "\n    throttled: {:.0} ms in balance_dirty_pages",
            e.throttle_pause_ms
        ));
    }
    if let Some(j) = &e.journal {
        s.push_str(&format!(
            "\n    journal: commit {} took {:.1} ms",
            j.transaction, j.duration_ms
        ));
    }
    if !w.contenders.is_empty() {
        let c: Vec<String> = w
            .contenders
            .iter()
            .map(|c| {
                format!(
                    "{} {} in {} req{}",
                    crate::attribution::render::who(c),
                    size(c.bytes),
                    c.requests,
                    {
                        // Its cgroups: unified, and v1 blkio/memory where they differ.
                        let mut g: Vec<String> = c
                            .cgroup
                            .iter()
                            .filter(|_| c.kind != crate::attribution::ContenderKind::Cgroup)
                            .cloned()
                            .collect();
                        for (k, v) in [("blkio", &c.blkio_cgroup), ("memory", &c.memory_cgroup)] {
                            if let Some(v) = v.as_ref().filter(|v| Some(*v) != c.cgroup.as_ref()) {
                                g.push(format!("{k}:{v}"));
                            }
                        }
                        if g.is_empty() {
                            String::new()
                        } else {
                            format!(" [{}]", g.join(" "))
                        }
                    }
                )
            })
            .collect();
        s.push_str(&format!("\n    contenders: {}", c.join(", ")));
    }
    if let Some(f) = &e.wait_frame {
        s.push_str(&format!("\n    waited at: {f}"));
    }
    if !e.incomplete.is_empty() {
        s.push_str(&format!("\n    incomplete: {}", e.incomplete.join("; ")));
    }
    for t in w.timeline.iter().take(8) {
        s.push_str(&format!(
            "\n    timeline: {} ({}) {} in {}{} [{}]",
            t.thread,
            t.tid,
            t.states,
            t.syscall.as_deref().unwrap_or("?"),
            t.waker
                .as_ref()
                .map(|w| format!(", woken by {w}"))
                .unwrap_or_default(),
            t.role.name()
        ));
    }
    if w.timeline_omitted > 0 {
        s.push_str(&format!(
            "\n    timeline: {} idle thread(s) left out",
            w.timeline_omitted
        ));
    }
    s
}

impl<W: Write> Sink for TextSink<W> {
    fn call(&mut self, r: &CallRecord) -> io::Result<()> {
        writeln!(self.w, "{}", format_call(r))?;
        self.w.flush()
    }

    fn event(&mut self, r: &EventRecord) -> io::Result<()> {
        // Each line starts with when it happened, as call lines do.
        let ts = r.start_ns().or_else(|| r.ts_field());
        match (ts, &self.wall) {
            (Some(ts), Some(clock)) => writeln!(
                self.w,
                "{} {}",
                wall(clock.unix_ms(crate::clock::MonoNs(ts))),
                r.text()
            )?,
            _ => writeln!(self.w, "{}", r.text())?,
        }
        self.w.flush()
    }

    fn clock(&mut self, wall: &crate::clock::WallClock) {
        self.wall = Some(*wall);
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        writeln!(
            self.w,
            "summary: {} call(s) traced in {:.1}s, {} at or above {} ms{}; {} kernel record(s)",
            s.calls,
            s.duration_s,
            s.reported,
            s.threshold_ms,
            if s.crossed > 0 {
                format!(" ({} reported while still running)", s.crossed)
            } else {
                String::new()
            },
            s.events,
        )?;
        if !s.watched.is_empty() {
            writeln!(
                self.w,
                "         disks watched request by request: {}; {} request(s) completed there{}{}{}",
                s.watched.join(", "),
                s.io_watched,
                if s.io_summed > 0 {
                    format!(
                        " ({} overlapping no traced call, summed per disk: --requests around-calls; {} of all first seen completing, not followed while no traced call was in flight)",
                        s.io_summed, s.io_late
                    )
                } else {
                    String::new()
                },
                if s.io_before_watch > 0 {
                    format!(
                        " ({} already in flight when watched: their submitter is unknown)",
                        s.io_before_watch
                    )
                } else {
                    String::new()
                },
                if s.unwatched > 0 {
                    format!(
                        " ({} no longer watched: no traced process used them any more)",
                        s.unwatched
                    )
                } else {
                    String::new()
                }
            )?;
        }
        let mut lost = Vec::new();
        if s.dropped > 0 {
            lost.push(format!(
                "{} record(s) dropped in the kernel because the ring buffer was full",
                s.dropped
            ));
        }
        if s.probe_misses > 0 {
            lost.push(format!(
                "{} probe run(s) skipped by the kernel (a tracepoint fired while the same program ran on that CPU)",
                s.probe_misses
            ));
        }
        if s.io_unseen > 0 {
            let by_disk: Vec<String> = s
                .unseen_disks
                .iter()
                .map(|d| {
                    format!(
                        "{} {} of {}",
                        d.name.as_deref().unwrap_or(&d.disk),
                        d.block_layer - d.counted,
                        d.block_layer
                    )
                })
                .collect();
            lost.push(format!(
                "{} request(s) that the block layer completed and the probes never saw (the kernel skipped those runs without counting them): {}",
                s.io_unseen,
                by_disk.join(", ")
            ));
        }
        if s.shed_by_reader > 0 {
            lost.push(format!(
                "{} record(s) shed by the reader because the analysis fell behind",
                s.shed_by_reader
            ));
        }
        if s.history_shed > 0 {
            lost.push(format!(
                "{} history entries shed to stay within memory (verdicts over them say incomplete)",
                s.history_shed
            ));
        }
        if s.unseen_windows > 0 {
            lost.push(format!(
                "on watched disks, {} completion(s) the probes did not see and {} request(s) held in flight that the disk no longer had, in {} window(s) (verdicts over them say incomplete)",
                s.unseen_watched, s.stale_requests, s.unseen_windows
            ));
        }
        if s.io_unmatched > 0 {
            lost.push(format!(
                "{} of {} request(s) on watched disks completed unpaired (their start was not seen)",
                s.io_unmatched, s.io_watched
            ));
        }
        if s.switch_unseen > 0 {
            lost.push(format!(
                "{} return(s) to a CPU the kernel ran no probe for: an off-CPU interval of a traced thread lost each time (the calls over them say so)",
                s.switch_unseen
            ));
        }
        if s.io_stale > 0 {
            lost.push(format!(
                "{} request entries replaced because their request was reused (a completion not seen)",
                s.io_stale
            ));
        }
        if s.calls_thread_exited > 0 {
            lost.push(format!(
                "{} call(s) closed by their thread's exit (not reported as calls)",
                s.calls_thread_exited
            ));
        }
        if s.untimed > 0 {
            lost.push(format!(
                "{} call(s) could not be timed (table full)",
                s.untimed
            ));
        }
        if s.calls_exit_lost > 0 {
            lost.push(format!(
                "{} call(s) whose exit was never seen (closed, not reported)",
                s.calls_exit_lost
            ));
        }
        if s.exit_without_enter > 0 {
            lost.push(format!(
                "{} exit(s) of calls whose entry was not seen",
                s.exit_without_enter
            ));
        }
        if s.read_errors + s.decode_errors + s.map_full + s.stack_errors > 0 {
            lost.push(format!(
                "{} field read error(s), {} undecodable record(s), {} kernel map refusal(s), {} stack error(s)",
                s.read_errors, s.decode_errors, s.map_full, s.stack_errors
            ));
        }
        if s.map_busy > 0 {
            lost.push(format!(
                "{} kernel map update(s) refused on a busy lock (a program interrupting another: a request entry may have outlived its request)",
                s.map_busy
            ));
        }
        if lost.is_empty() {
            writeln!(self.w, "         nothing was lost")?;
        } else {
            for l in lost {
                writeln!(self.w, "         lost: {l}")?;
            }
        }
        if s.io_other_disks > 0 {
            let top: Vec<String> = s
                .other_disks
                .iter()
                .take(5)
                .map(|d| {
                    // Watched later on: these came before (or between the watch of a
                    // disk and of its partitions).
                    let later = s
                        .watched
                        .iter()
                        .any(|w| w.ends_with(&format!("({})", d.disk)));
                    format!(
                        "{} {} req {}{}{}",
                        d.name.as_deref().unwrap_or(&d.disk),
                        d.requests,
                        crate::attribution::render::size(d.bytes),
                        d.cgroup
                            .as_ref()
                            .map(|c| format!(" [{c}]"))
                            .unwrap_or_default(),
                        if later {
                            " (before it was watched)"
                        } else {
                            ""
                        }
                    )
                })
                .collect();
            writeln!(
                self.w,
                "         other disks (counted, not traced one by one): {} request(s){}{}",
                s.io_other_disks,
                if top.is_empty() { "" } else { ": " },
                top.join(", ")
            )?;
        }
        for d in &s.disabled {
            writeln!(
                self.w,
                "         signal {} is off on this kernel: {}",
                d.signal, d.reason
            )?;
        }
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_carries_its_offset() {
        // The global switch is left alone: other tests read UTC lines in parallel.
        let t = local(1_700_000_000_123).expect("localtime_r");
        let (date, rest) = t.split_at(10);
        assert_eq!(date.len(), 10, "{t}");
        assert!(rest.starts_with('T') && rest.contains(".123"), "{t}");
        let off = &t[t.len() - 6..];
        assert!(
            (off.starts_with('+') || off.starts_with('-')) && off.as_bytes()[3] == b':',
            "{t}"
        );
        assert!(wall(1_700_000_000_123).ends_with('Z'));
    }

    #[test]
    fn one_readable_line_with_the_same_facts() {
        let r = super::super::json::tests::record();
        let line = format_call(&r);
        assert!(line.contains("fdatasync"), "{line}");
        assert!(line.contains("213.500 ms"), "{line}");
        assert!(line.contains("SyncThread:1 (pid 10 tid 11)"), "{line}");
        assert!(
            line.contains("fd 5 /zk/version-2/log.1 on loop0 (7:0)"),
            "{line}"
        );
        assert!(line.starts_with("2023-11-14T22:13:20.000Z"), "{line}");
        let mut failed = r.clone();
        failed.ret = Some(-5);
        assert!(format_call(&failed).contains("failed: Input/output error"));
    }

    #[test]
    fn contenders_carry_their_cgroups_in_text() {
        use crate::attribution::{Contender, ContenderKind, Explanation, Verdict};
        let mut r = super::super::json::tests::record();
        r.why = Some(Explanation {
            verdict: Verdict::DeviceContention,
            via: Some("journal"),
            headline: "dd (pid 812) kept loop0 busy".into(),
            chain: Vec::new(),
            stages: Default::default(),
            evidence: Default::default(),
            contenders: vec![Contender {
                pid: 812,
                tid: 812,
                comm: "dd".into(),
                process: None,
                cgroup: Some("/backup.slice".into()),
                blkio_cgroup: Some("/backup".into()),
                memory_cgroup: None,
                kind: ContenderKind::Task,
                same_process: false,
                bytes: 240_156_672,
                requests: 230,
                discards: 0,
                bytes_discarded: 0,
                disk: "loop0".into(),
            }],
            timeline: Vec::new(),
            timeline_omitted: 0,
        });
        let text = format_call(&r);
        assert!(
            text.contains(
                "contenders: dd (pid 812) 240.2 MB in 230 req [/backup.slice blkio:/backup]"
            ),
            "{text}"
        );
    }

    #[test]
    fn summary_names_losses_and_disabled_signals() {
        let mut out = Vec::new();
        let s = Summary {
            kind: "summary",
            dropped: 2,
            untimed: 1,
            disabled: vec![super::super::DisabledSignal {
                signal: "syncfs".into(),
                reason: "absent".into(),
            }],
            ..Default::default()
        };
        TextSink::new(&mut out).summary(&s).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("2 record(s) dropped in the kernel"), "{text}");
        assert!(text.contains("1 call(s) could not be timed"), "{text}");
        assert!(text.contains("signal syncfs is off"), "{text}");
    }
}
