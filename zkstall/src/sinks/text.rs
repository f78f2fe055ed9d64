//! Human-readable lines: one per call, with the same facts as the JSON record.

use std::{
    io::{self, Write},
    time::{Duration, UNIX_EPOCH},
};

use super::{CallRecord, EventRecord, Sink, Summary};

pub struct TextSink<W: Write> {
    w: W,
}

impl<W: Write> TextSink<W> {
    pub fn new(w: W) -> Self {
        TextSink { w }
    }
}

/// `2026-11-24T18:40:01.123Z` for Unix milliseconds.
fn wall(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
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
    if let Some(ret) = r.ret
        && ret < 0
    {
        let err = io::Error::from_raw_os_error((-ret) as i32);
        s.push_str(&format!(" failed: {err}"));
    }
    if r.unfinished {
        s.push_str("  [still running when tracing ended]");
    }
    if let (Some(after), Some(visible)) = (r.after_ms, r.visible_ms) {
        s.push_str(&format!(
            "  (+{after:.3} ms before the thread ran again: {visible:.3} ms as its caller saw it)"
        ));
    }
    if let Some(why) = &r.why {
        s.push_str(&explanation(why));
    }
    s
}

/// The indented block under a call: headline, evidence, contenders, thread timeline.
fn explanation(w: &crate::attribution::Explanation) -> String {
    let e = &w.evidence;
    let mut s = format!("\n    why: [{}] {}", w.verdict, w.headline);
    s.push_str(&format!(
        "\n    thread: {:.1} ms on CPU, {:.1} ms D, {:.1} ms S, {:.1} ms run queue",
        e.on_cpu_ms, e.d_state_ms, e.s_state_ms, e.runq_ms
    ));
    if e.completions > 0 || e.inflight_max > 0 {
        s.push_str(&format!(
            "\n    device: {} completion(s), up to {} in flight, longest gap {:.1} ms",
            e.completions, e.inflight_max, e.longest_completion_gap_ms
        ));
        if let Some(l) = &e.latency_ms {
            s.push_str(&format!(
                ", latency p50 {:.2} p99 {:.2} max {:.2} ms",
                l.p50, l.p99, l.max
            ));
        }
        s.push_str(&format!(
            "; {} B own, {} B others",
            e.bytes_target, e.bytes_others
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
                    "{} ({}) {:.1} MB/{} req",
                    c.comm,
                    c.pid,
                    c.bytes as f64 / 1e6,
                    c.requests
                )
            })
            .collect();
        s.push_str(&format!("\n    contenders: {}", c.join(", ")));
    }
    if let Some(top) = e
        .stack
        .iter()
        .find(|f| !f.starts_with("__traceiter") && !f.contains("schedule"))
    {
        s.push_str(&format!("\n    waited at: {top}"));
    }
    for t in w.timeline.iter().take(6) {
        s.push_str(&format!(
            "\n    timeline: {} ({}) {} {:.1} ms in {}{}",
            t.thread,
            t.tid,
            t.state,
            t.duration_ms,
            t.syscall.as_deref().unwrap_or("?"),
            t.waker
                .as_ref()
                .map(|w| format!(", woken by {w}"))
                .unwrap_or_default()
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
        writeln!(self.w, "{}", r.text())?;
        self.w.flush()
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        writeln!(
            self.w,
            "summary: {} call(s) traced in {:.1}s, {} at or above {} ms; {} kernel record(s), {} dropped",
            s.calls, s.duration_s, s.reported, s.threshold_ms, s.events, s.dropped
        )?;
        let lost = s.untimed
            + s.exit_without_enter
            + s.read_errors
            + s.decode_errors
            + s.io_unmatched
            + s.map_full
            + s.stack_errors;
        if lost > 0 {
            writeln!(
                self.w,
                "         incomplete: {} untimed (open-call table full), {} exits without entry, {} field read errors, {} undecodable records, {} unmatched I/O completions, {} kernel map refusals, {} stack errors",
                s.untimed,
                s.exit_without_enter,
                s.read_errors,
                s.decode_errors,
                s.io_unmatched,
                s.map_full,
                s.stack_errors
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
        assert!(text.contains("2 dropped"), "{text}");
        assert!(text.contains("1 untimed"), "{text}");
        assert!(text.contains("signal syncfs is off"), "{text}");
    }
}
