//! JSON lines: one object per line, flushed per record so a pipe sees it at once.

use std::io::{self, Write};

use super::{CallRecord, EventRecord, Sink, Summary};

pub struct JsonSink<W: Write> {
    w: W,
}

impl<W: Write> JsonSink<W> {
    pub fn new(w: W) -> Self {
        JsonSink { w }
    }

    fn line<T: serde::Serialize>(&mut self, v: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.w, v)?;
        self.w.write_all(b"\n")?;
        self.w.flush()
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn call(&mut self, r: &CallRecord) -> io::Result<()> {
        self.line(r)
    }
    fn event(&mut self, r: &EventRecord) -> io::Result<()> {
        self.line(r)
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.line(s)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record() -> CallRecord {
        CallRecord {
            kind: "fsync",
            pid: 10,
            tid: 11,
            thread: "SyncThread:1".into(),
            syscall: "fdatasync",
            fd: Some(5),
            path: Some("/zk/version-2/log.1".into()),
            dev: Some("7:0".into()),
            device: Some("loop0".into()),
            disk: Some("loop0".into()),
            start_ns: 123,
            start_unix_ms: 1_700_000_000_000,
            duration_ms: 213.5,
            ret: Some(0),
            unfinished: false,
            in_progress: false,
            start_bound: false,
            after_ms: None,
            visible_ms: None,
            why: None,
        }
    }

    #[test]
    fn writes_the_documented_field_names() {
        let mut out = Vec::new();
        JsonSink::new(&mut out).call(&record()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for key in [
            "type",
            "pid",
            "tid",
            "thread",
            "syscall",
            "fd",
            "path",
            "dev",
            "device",
            "start_ns",
            "start_unix_ms",
            "duration_ms",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["type"], "fsync");
        assert_eq!(v["dev"], "7:0");
        assert_eq!(v["duration_ms"], 213.5);
        assert!(v.get("unfinished").is_none());
        assert!(out.ends_with(b"\n"));
    }

    #[test]
    fn summary_is_a_typed_line() {
        let mut out = Vec::new();
        let s = Summary {
            kind: "summary",
            dropped: 3,
            ..Default::default()
        };
        JsonSink::new(&mut out).summary(&s).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["dropped"], 3);
    }
}
