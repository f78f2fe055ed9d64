"""Decodes a Perfetto trace with Perfetto's own protos (the `perfetto` PyPI package) and
prints what the export tests check, as JSON: tracks, slices (begin/end paired per track),
instants, counter samples, flows."""
import json
import sys

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

trace = pb.Trace()
with open(sys.argv[1], "rb") as f:
    trace.ParseFromString(f.read())

TE = pb.TrackEvent
tracks, open_slices = {}, {}
slices, instants, samples = [], [], []
flows_out, flows_in = set(), set()
for p in trace.packet:
    if p.HasField("track_descriptor"):
        d = p.track_descriptor
        t = {"uuid": d.uuid, "parent": d.parent_uuid or None, "name": d.name}
        if d.HasField("process"):
            t.update(kind="process", pid=d.process.pid, name=d.process.process_name,
                     labels=list(d.process.process_labels))
        elif d.HasField("thread"):
            t.update(kind="thread", pid=d.thread.pid, tid=d.thread.tid,
                     name=d.thread.thread_name)
        elif d.HasField("counter"):
            t.update(kind="counter")
        else:
            t.update(kind="track")
        tracks[d.uuid] = t
    elif p.HasField("track_event"):
        e = p.track_event
        ts = p.timestamp
        args = {}
        for a in e.debug_annotations:
            kind = a.WhichOneof("value")
            args[a.name] = getattr(a, kind) if kind else None
        if e.type == TE.TYPE_SLICE_BEGIN:
            open_slices.setdefault(e.track_uuid, []).append(
                {"track": e.track_uuid, "name": e.name, "ts": ts, "cat": list(e.categories),
                 "args": args})
            flows_in.update(e.terminating_flow_ids)
        elif e.type == TE.TYPE_SLICE_END:
            s = open_slices[e.track_uuid].pop()
            s["dur"] = ts - s["ts"]
            slices.append(s)
        elif e.type == TE.TYPE_INSTANT:
            instants.append({"track": e.track_uuid, "name": e.name, "ts": ts, "args": args})
            flows_out.update(e.flow_ids)
        elif e.type == TE.TYPE_COUNTER:
            samples.append({"track": e.track_uuid, "ts": ts, "value": e.double_counter_value})

unclosed = sum(len(v) for v in open_slices.values())
json.dump({"tracks": list(tracks.values()), "slices": slices, "instants": instants,
           "samples": samples, "unclosed": unclosed,
           "flows_matched": len(flows_out & flows_in), "flows_out": len(flows_out),
           "packets": len(trace.packet)}, sys.stdout)
