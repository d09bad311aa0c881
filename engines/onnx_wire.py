"""An ONNX file read (and its weights touched) straight from the protobuf wire format.

``import onnx`` takes most of a second in every stage process that loads a model, and
``onnx.load`` parses the whole graph; what the engines need from a file is small: its
metadata (a top-level field, :mod:`engines.metadata`) and, here, its float weights' bytes.

Subnormal weights: a float32 this close to zero (under 1.18e-38) is computed on Intel CPUs
through a slow microcode path, tens of times slower than a normal float; AMD CPUs barely
notice. The shared PFLD 68-point model, which reads the eyes for blinks, holds 447 k of them
(60 % of its weights): 46 ms a face on an Intel Xeon core instead of 2 ms. They are zero in all
but name (the largest is 1.2e-38, far below anything a face's pixels could add up to), so
:func:`flush_subnormal_weights` sets them to zero in place -- the same length of bytes, so the
file's structure is untouched -- and the model computes the same outputs (bit for bit on the
PFLD model) at the normal speed.
"""
from __future__ import annotations

import numpy as np

MODEL_GRAPH = 7  # ModelProto.graph
GRAPH_INITIALIZER = 5  # GraphProto.initializer (TensorProto)
TENSOR_DATA_TYPE, TENSOR_FLOAT_DATA, TENSOR_RAW_DATA = 2, 4, 9  # TensorProto fields
FLOAT = 1  # TensorProto.DataType.FLOAT

_EXPONENT, _MANTISSA, _SIGN = np.uint32(0x7F800000), np.uint32(0x007FFFFF), np.uint32(0x80000000)


def varint(data, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def fields(data, start: int, end: int):
    """(field number, value) of one protobuf message's fields: a varint's value, a length-delimited
    field's (start, end) in ``data``; fixed-size fields' values are not needed here (None)."""
    at = start
    while at < end:
        tag, at = varint(data, at)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, at = varint(data, at)
        elif wire_type == 1:
            at, value = at + 8, None
        elif wire_type == 2:
            length, at = varint(data, at)
            value, at = (at, at + length), at + length
        elif wire_type == 5:
            at, value = at + 4, None
        else:
            raise ValueError(f"wire type {wire_type}")
        if at > end or number == 0:
            raise ValueError("field runs past the message")
        yield number, value


def float_weight_spans(data) -> list[tuple[int, int]]:
    """The (start, end) byte spans of an ONNX model's float32 initializers stored in the file
    (raw_data or packed float_data; weights kept in external files are not)."""
    spans = []
    for number, graph in fields(data, 0, len(data)):
        if number != MODEL_GRAPH or graph is None:
            continue
        for field, tensor in fields(data, *graph):
            if field != GRAPH_INITIALIZER or tensor is None:
                continue
            parts = list(fields(data, *tensor))
            if dict(parts).get(TENSOR_DATA_TYPE) != FLOAT:
                continue
            spans += [span for f, span in parts if f in (TENSOR_RAW_DATA, TENSOR_FLOAT_DATA) and span is not None]
    return spans


def _subnormal(words: np.ndarray) -> np.ndarray:
    return ((words & _EXPONENT) == 0) & ((words & _MANTISSA) != 0)


def count_subnormal_weights(data) -> int:
    return sum(int(_subnormal(np.frombuffer(data, np.dtype("<u4"), (end - start) // 4, start)).sum())
               for start, end in float_weight_spans(data))


def flush_subnormal_weights(data: bytearray) -> int:
    """Set every subnormal float32 weight of the ONNX model in ``data`` to zero (its sign kept), in
    place; returns how many there were."""
    flushed = 0
    for start, end in float_weight_spans(data):
        words = np.frombuffer(data, np.dtype("<u4"), (end - start) // 4, start)
        tiny = _subnormal(words)
        if tiny.any():
            words[tiny] &= _SIGN
            flushed += int(tiny.sum())
    return flushed
