"""Compares zkstall's vendored subset of Perfetto's protos (zkstall/proto/) with the
descriptors of Perfetto's own, as the `perfetto` PyPI package ships them: every message,
field (name, number, type, label) and enum value zkstall declares must be Perfetto's.
Prints one line per mismatch; exit status 1 if any."""
import re
import sys

from google.protobuf.descriptor import FieldDescriptor as F
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

pool = pb.DESCRIPTOR.pool
SCALARS = {
    "double": F.TYPE_DOUBLE, "float": F.TYPE_FLOAT, "int64": F.TYPE_INT64,
    "uint64": F.TYPE_UINT64, "int32": F.TYPE_INT32, "fixed64": F.TYPE_FIXED64,
    "fixed32": F.TYPE_FIXED32, "bool": F.TYPE_BOOL, "string": F.TYPE_STRING,
    "bytes": F.TYPE_BYTES, "uint32": F.TYPE_UINT32, "sint32": F.TYPE_SINT32,
    "sint64": F.TYPE_SINT64,
}
text = re.sub(r"//[^\n]*", "", open(sys.argv[1]).read())
stack, bad, checked = [], [], 0
for tok in re.finditer(r"(message|enum|oneof)\s+(\w+)\s*\{|\}|([^;{}]+);", text):
    if tok.group(1):
        stack.append((tok.group(1), tok.group(2)))
        continue
    if tok.group(0) == "}":
        stack.pop()
        continue
    stmt = tok.group(3).strip()
    if not stack or stmt.startswith(("syntax", "package")):
        continue
    msgs = [n for k, n in stack if k == "message"]
    full = "perfetto.protos." + ".".join(msgs)
    kind = stack[-1][0]
    if kind == "enum":
        name, num = [x.strip() for x in stmt.split("=")]
        enum = pool.FindEnumTypeByName(full + "." + stack[-1][1])
        v = enum.values_by_name.get(name)
        checked += 1
        if v is None or v.number != int(num):
            bad.append(f"{enum.full_name}.{name} = {num}: Perfetto has {v and v.number}")
        continue
    m = re.fullmatch(r"(optional|repeated)?\s*([\w.]+)\s+(\w+)\s*=\s*(\d+)", stmt)
    if not m:
        bad.append(f"cannot read {stmt!r} in {full}")
        continue
    label, typ, name, num = m.groups()
    desc = pool.FindMessageTypeByName(full)
    f = desc.fields_by_name.get(name)
    checked += 1
    if f is None:
        bad.append(f"{full}.{name}: not in Perfetto's {full}")
        continue
    if f.number != int(num):
        bad.append(f"{full}.{name} = {num}: Perfetto numbers it {f.number}")
    if typ in SCALARS:
        if f.type != SCALARS[typ]:
            bad.append(f"{full}.{name}: {typ}, Perfetto's type is {f.type}")
    else:
        target = (f.message_type or f.enum_type)
        if target is None or not target.full_name.endswith(typ):
            bad.append(f"{full}.{name}: {typ}, Perfetto's is {target and target.full_name}")
    if (label == "repeated") != f.is_repeated:
        bad.append(f"{full}.{name}: repeated mismatch")
    if kind == "oneof":
        o = f.containing_oneof
        if o is None or o.name != stack[-1][1]:
            bad.append(f"{full}.{name}: in oneof {stack[-1][1]}, Perfetto's is {o and o.name}")
for b in bad:
    print(b)
print(f"checked {checked} fields and values, {len(bad)} mismatches")
sys.exit(1 if bad else 0)
