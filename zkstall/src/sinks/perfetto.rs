//! A [`Timeline`] as a native Perfetto trace: `Trace { repeated TracePacket packet = 1 }`
//! with TrackDescriptors, then TrackEvents in time order, on one trusted sequence. The
//! types are generated from Perfetto's own .proto definitions (proto/, build.rs) by prost.
//!
//! Timestamps are Unix nanoseconds in Perfetto's default trace clock; a ClockSnapshot says
//! that clock equals CLOCK_REALTIME, so the UI can show wall time.

use std::io::{self, Write};

use prost::Message as _;

use super::timeline::{Arg, Timeline, TrackKind, Unit};

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod protos {
    include!(concat!(env!("OUT_DIR"), "/perfetto.protos.rs"));
}

use protos::{
    ClockSnapshot, CounterDescriptor, DebugAnnotation, ProcessDescriptor, ThreadDescriptor,
    TracePacket, TrackDescriptor, TrackEvent, clock_snapshot::Clock, counter_descriptor,
    debug_annotation, trace_packet, track_descriptor, track_event,
};

const SEQUENCE: u32 = 1;
const BUILTIN_CLOCK_REALTIME: u32 = 1;
const BUILTIN_CLOCK_BOOTTIME: u32 = 6;

fn annotations(args: &[(&'static str, Arg)]) -> Vec<DebugAnnotation> {
    args.iter()
        .map(|(k, v)| DebugAnnotation {
            name_field: Some(debug_annotation::NameField::Name(k.to_string())),
            value: Some(match v {
                Arg::Str(s) => debug_annotation::Value::StringValue(s.clone()),
                Arg::Int(i) => debug_annotation::Value::IntValue(*i),
                Arg::F64(f) => debug_annotation::Value::DoubleValue(*f),
                Arg::Bool(b) => debug_annotation::Value::BoolValue(*b),
            }),
        })
        .collect()
}

fn packet(ts: Option<u64>, data: trace_packet::Data) -> TracePacket {
    TracePacket {
        timestamp: ts,
        data: Some(data),
        optional_trusted_packet_sequence_id: Some(
            trace_packet::OptionalTrustedPacketSequenceId::TrustedPacketSequenceId(SEQUENCE),
        ),
        ..Default::default()
    }
}

fn event(ts: u64, e: TrackEvent) -> TracePacket {
    packet(Some(ts), trace_packet::Data::TrackEvent(e))
}

/// Writes `t` to `w`, packet by packet (each one a `Trace.packet` field).
pub fn write(t: &Timeline, w: &mut impl Write) -> io::Result<()> {
    let mut buf = Vec::with_capacity(256);
    let mut put = |p: &TracePacket, w: &mut dyn Write| -> io::Result<()> {
        buf.clear();
        // Field 1 (packet), wire type 2 (length-delimited).
        buf.push(0x0a);
        prost::encoding::encode_varint(p.encoded_len() as u64, &mut buf);
        p.encode(&mut buf).map_err(io::Error::other)?;
        w.write_all(&buf)
    };
    let first_ts = t
        .slices
        .iter()
        .map(|s| s.start)
        .chain(t.instants.iter().map(|i| i.ts))
        .chain(t.samples.iter().map(|s| s.ts))
        .min()
        .unwrap_or(0);
    let mut clock = packet(
        Some(first_ts),
        trace_packet::Data::ClockSnapshot(ClockSnapshot {
            clocks: vec![
                Clock {
                    clock_id: Some(BUILTIN_CLOCK_BOOTTIME),
                    timestamp: Some(first_ts),
                    ..Default::default()
                },
                Clock {
                    clock_id: Some(BUILTIN_CLOCK_REALTIME),
                    timestamp: Some(first_ts),
                    ..Default::default()
                },
            ],
        }),
    );
    clock.sequence_flags = Some(trace_packet::SequenceFlags::SeqIncrementalStateCleared as u32);
    clock.first_packet_on_sequence = Some(true);
    put(&clock, w)?;

    for tr in &t.tracks {
        let mut d = TrackDescriptor {
            uuid: Some(tr.uuid),
            parent_uuid: tr.parent,
            ..Default::default()
        };
        match &tr.kind {
            TrackKind::Process { pid, labels, .. } => {
                d.process = Some(ProcessDescriptor {
                    pid: Some(*pid),
                    process_name: Some(tr.name.clone()),
                    process_labels: labels.clone(),
                    ..Default::default()
                });
                // A process track's parent is implicit.
                d.parent_uuid = None;
            }
            TrackKind::Thread { pid, tid, .. } => {
                d.thread = Some(ThreadDescriptor {
                    pid: Some(*pid),
                    tid: Some(*tid as i64),
                    thread_name: Some(tr.name.clone()),
                });
                d.parent_uuid = None;
            }
            TrackKind::Group | TrackKind::Slices => {
                d.static_or_dynamic_name =
                    Some(track_descriptor::StaticOrDynamicName::Name(tr.name.clone()));
            }
            TrackKind::Counter { unit } => {
                d.static_or_dynamic_name =
                    Some(track_descriptor::StaticOrDynamicName::Name(tr.name.clone()));
                let (u, name) = match unit {
                    Unit::Count => (counter_descriptor::Unit::Count, None),
                    Unit::MegabytesPerSecond => (
                        counter_descriptor::Unit::Unspecified,
                        Some("MB/s".to_string()),
                    ),
                    Unit::PerSecond => (counter_descriptor::Unit::Unspecified, Some("/s".into())),
                };
                d.counter = Some(CounterDescriptor {
                    unit: Some(u as i32),
                    unit_name: name,
                    ..Default::default()
                });
            }
        }
        put(&packet(None, trace_packet::Data::TrackDescriptor(d)), w)?;
    }

    // Events in time order; at one instant: ends, then counters and instants, then begins
    // (longer first, so a slice starting with its parent nests inside it).
    #[derive(Clone, Copy)]
    enum Ev {
        Begin(usize),
        End(usize),
        Instant(usize),
        Sample(usize),
    }
    let mut evs: Vec<(u64, u8, i64, Ev)> =
        Vec::with_capacity(t.slices.len() * 2 + t.instants.len() + t.samples.len());
    for (i, s) in t.slices.iter().enumerate() {
        evs.push((s.start, 3, -(s.dur as i64), Ev::Begin(i)));
        evs.push((s.start + s.dur, 0, -(s.start as i64), Ev::End(i)));
    }
    for (i, x) in t.instants.iter().enumerate() {
        evs.push((x.ts, 2, 0, Ev::Instant(i)));
    }
    for (i, x) in t.samples.iter().enumerate() {
        evs.push((x.ts, 1, 0, Ev::Sample(i)));
    }
    evs.sort_by_key(|&(ts, rank, tie, _)| (ts, rank, tie));
    for (ts, _, _, ev) in evs {
        let e = match ev {
            Ev::Begin(i) => {
                let s = &t.slices[i];
                TrackEvent {
                    r#type: Some(track_event::Type::SliceBegin as i32),
                    track_uuid: Some(s.track),
                    name_field: Some(track_event::NameField::Name(s.name.clone())),
                    categories: vec![s.cat.to_string()],
                    debug_annotations: annotations(&s.args),
                    terminating_flow_ids: s.flow_in.into_iter().collect(),
                    ..Default::default()
                }
            }
            Ev::End(i) => TrackEvent {
                r#type: Some(track_event::Type::SliceEnd as i32),
                track_uuid: Some(t.slices[i].track),
                ..Default::default()
            },
            Ev::Instant(i) => {
                let x = &t.instants[i];
                TrackEvent {
                    r#type: Some(track_event::Type::Instant as i32),
                    track_uuid: Some(x.track),
                    name_field: Some(track_event::NameField::Name(x.name.clone())),
                    categories: vec![x.cat.to_string()],
                    debug_annotations: annotations(&x.args),
                    flow_ids: x.flow_out.into_iter().collect(),
                    ..Default::default()
                }
            }
            Ev::Sample(i) => {
                let x = &t.samples[i];
                TrackEvent {
                    r#type: Some(track_event::Type::Counter as i32),
                    track_uuid: Some(x.track),
                    counter_value_field: Some(track_event::CounterValueField::DoubleCounterValue(
                        x.value,
                    )),
                    ..Default::default()
                }
            }
        };
        put(&event(ts, e), w)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::{Sink as _, json::tests::record, timeline::TimelineSink};

    #[test]
    fn decodes_back_with_the_generated_types() {
        let mut s = TimelineSink::new();
        s.begin(crate::sinks::timeline::tests::source("zk1"));
        s.call(&record()).unwrap();
        let t = s.finish();
        let mut out = Vec::new();
        write(&t, &mut out).unwrap();
        let trace = protos::Trace::decode(out.as_slice()).unwrap();
        // clock, process, thread, then begin/end of the call and the verdict-less call
        // has no instant.
        assert_eq!(trace.packet.len(), 1 + 2 + 2);
        let begin = trace
            .packet
            .iter()
            .find_map(|p| match &p.data {
                Some(trace_packet::Data::TrackEvent(e))
                    if e.r#type == Some(track_event::Type::SliceBegin as i32) =>
                {
                    Some((p.timestamp, e.clone()))
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(
            begin.1.name_field,
            Some(track_event::NameField::Name("fdatasync".into()))
        );
        assert_eq!(begin.0, Some(1_700_000_000_000_000_123));
    }
}
