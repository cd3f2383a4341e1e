"""Writes proto/proto/model_config.proto from the descriptor that Triton's
PyPI client (tritonclient, installed by `make bootstrap`) carries, so that
Meridian's ModelConfig has every field Triton's does and a config.pbtxt
parses whole (unsupported keys are then reported by name, not as parse
errors). The wire compatibility test (proto/tests/tritonclient_compat.rs)
checks the result field by field.

  PYTHONPATH=.tools/python python3 scripts/triton-model-config-proto.py > proto/proto/model_config.proto
"""
from importlib.metadata import version

from google.protobuf import descriptor as d
from tritonclient.grpc import model_config_pb2

SCALARS = {
    d.FieldDescriptor.TYPE_DOUBLE: "double", d.FieldDescriptor.TYPE_FLOAT: "float",
    d.FieldDescriptor.TYPE_INT64: "int64", d.FieldDescriptor.TYPE_UINT64: "uint64",
    d.FieldDescriptor.TYPE_INT32: "int32", d.FieldDescriptor.TYPE_UINT32: "uint32",
    d.FieldDescriptor.TYPE_BOOL: "bool", d.FieldDescriptor.TYPE_STRING: "string",
    d.FieldDescriptor.TYPE_BYTES: "bytes", d.FieldDescriptor.TYPE_FIXED64: "fixed64",
    d.FieldDescriptor.TYPE_FIXED32: "fixed32", d.FieldDescriptor.TYPE_SINT32: "sint32",
    d.FieldDescriptor.TYPE_SINT64: "sint64", d.FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    d.FieldDescriptor.TYPE_SFIXED64: "sfixed64",
}


def type_name(field, scope):
    if field.message_type is not None:
        return relative(field.message_type.full_name, scope)
    if field.enum_type is not None:
        return relative(field.enum_type.full_name, scope)
    return SCALARS[field.type]


def relative(full, scope):
    # Names inside the package are written relative to it.
    return full[len("inference."):] if full.startswith("inference.") else "." + full


def field_line(field, scope):
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return f"map<{type_name(key, scope)}, {type_name(value, scope)}> {field.name} = {field.number};"
    label = "repeated " if field.label == d.FieldDescriptor.LABEL_REPEATED else ""
    return f"{label}{type_name(field, scope)} {field.name} = {field.number};"


def enum(e, indent):
    pad = "  " * indent
    out = [f"{pad}enum {e.name} {{"]
    out += [f"{pad}  {v.name} = {v.number};" for v in e.values]
    out.append(f"{pad}}}")
    return out


def message(m, indent):
    pad = "  " * indent
    out = [f"{pad}message {m.name} {{"]
    for e in m.enum_types:
        out += enum(e, indent + 1)
    for nested in m.nested_types:
        if not nested.GetOptions().map_entry:
            out += message(nested, indent + 1)
    oneofs = {o.name: o for o in m.oneofs}
    written = set()
    for field in m.fields:
        if field.containing_oneof is not None and field.containing_oneof.name in oneofs:
            o = field.containing_oneof
            if o.name in written:
                continue
            written.add(o.name)
            out.append(f"{pad}  oneof {o.name} {{")
            out += [f"{pad}    {field_line(f, m.full_name)}" for f in o.fields]
            out.append(f"{pad}  }}")
        else:
            out.append(f"{pad}  {field_line(field, m.full_name)}")
    out.append(f"{pad}}}")
    return out


def main():
    f = model_config_pb2.DESCRIPTOR
    lines = [
        "// Triton's model configuration (`inference.ModelConfig`), every message",
        "// and field, written by scripts/triton-model-config-proto.py from the",
        f"// descriptor in tritonclient {version('tritonclient')} (PyPI). Meridian fills it",
        "// in for ModelConfig responses and parses Triton's config.pbtxt with it;",
        "// do not edit by hand.",
        'syntax = "proto3";',
        "",
        f"package {f.package};",
        "",
    ]
    for e in f.enum_types_by_name.values():
        lines += enum(e, 0) + [""]
    for m in f.message_types_by_name.values():
        lines += message(m, 0) + [""]
    print("\n".join(lines).rstrip())


main()
