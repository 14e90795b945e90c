#!/usr/bin/env python3
"""Writes the fuzzer's seed corpus (fuzz/corpus/): a few valid safetensors files and a few broken
ones, built byte by byte from the format so the seeds do not depend on Ember's writer.
Run from the repository root: python3 fuzz/make_corpus.py"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "safetensors")


def st(entries, metadata=None, pad=True):
    """entries: list of (name, dtype, shape, raw bytes); laid out in order."""
    header, data = {}, b""
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def raw_header(text, data=b""):
    text = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(text)) + text + data


files = {
    "valid_f32_2x2": st([("w", "F32", [2, 2], struct.pack("<4f", 1, -2, 0.5, 3))]),
    "valid_many": st([("a.i64", "I64", [3], struct.pack("<3q", 7, -1, 2**62)),
                      ("b.f64", "F64", [1, 2], struct.pack("<2d", 1e300, -0.0)),
                      ("c.i32", "I32", [], struct.pack("<i", 5)),
                      ("d.empty", "F32", [0, 4], b"")],
                     metadata={"format": "pt", "step": "10"}),
    "valid_half": st([("h", "F16", [3], struct.pack("<3H", 0x3C00, 0xC000, 0x0001)),
                      ("b", "BF16", [2], struct.pack("<2H", 0x3F80, 0x7FC0))]),
    "valid_unpadded": st([("x", "F32", [1], struct.pack("<f", 4))], pad=False),
    "unsupported_u8": st([("m", "U8", [4], b"\x01\x02\x03\x04")]),
    "broken_short": b"\x10\x00\x00",
    "broken_huge_length": struct.pack("<Q", 2**63) + b"{}",
    "broken_json": raw_header('{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]', b"\0" * 16),
    "broken_overlap": raw_header('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                                 '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', b"\0" * 12),
    "broken_gap": raw_header('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', b"\0" * 8),
    "broken_overflow": raw_header('{"a":{"dtype":"F32","shape":[4294967296,4294967296],'
                                  '"data_offsets":[0,0]}}'),
    "broken_truncated": st([("w", "F32", [4], struct.pack("<4f", 1, 2, 3, 4))])[:-5],
}

os.makedirs(OUT, exist_ok=True)
for name, data in files.items():
    with open(os.path.join(OUT, name + ".safetensors"), "wb") as f:
        f.write(data)
print(f"wrote {len(files)} seeds to {OUT}")
