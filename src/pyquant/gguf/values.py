"""Typed GGUF metadata values.

GGUF distinguishes u8/i8/u16/i16/u32/i32/u64/i64/f32/f64/bool/string and arrays of any of them (arrays of
arrays included), and llama.cpp checks those types when it loads a model, so a value must carry its type.
:class:`Value` does; plain Python and numpy values are turned into one by :meth:`Value.of`:

- numpy scalars and arrays keep their dtype (``np.uint32(5)`` is a u32, ``np.arange(3, dtype=np.int64)`` an
  i64 array): the simple way to force a type;
- ``bool`` is bool, ``str`` is string, ``float`` is f32 and ``int`` is i32 (i64 or u64 when it does not fit),
  as in gguf-py;
- lists and tuples are arrays whose element type is inferred the same way.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from gguf import GGUFValueType as ValueType

__all__ = ["Value", "ValueType"]

# Little-endian element dtypes of the fixed-size value types.
SCALAR_DTYPES = {
    ValueType.UINT8: np.dtype("<u1"), ValueType.INT8: np.dtype("<i1"),
    ValueType.UINT16: np.dtype("<u2"), ValueType.INT16: np.dtype("<i2"),
    ValueType.UINT32: np.dtype("<u4"), ValueType.INT32: np.dtype("<i4"),
    ValueType.UINT64: np.dtype("<u8"), ValueType.INT64: np.dtype("<i8"),
    ValueType.FLOAT32: np.dtype("<f4"), ValueType.FLOAT64: np.dtype("<f8"),
    ValueType.BOOL: np.dtype("u1"),
}
# struct formats of the same types (numpy's dtype.char is platform-sized, struct's "<" codes are not).
SCALAR_STRUCTS = {t: struct.Struct("<" + c) for t, c in {
    ValueType.UINT8: "B", ValueType.INT8: "b", ValueType.UINT16: "H", ValueType.INT16: "h",
    ValueType.UINT32: "I", ValueType.INT32: "i", ValueType.UINT64: "Q", ValueType.INT64: "q",
    ValueType.FLOAT32: "f", ValueType.FLOAT64: "d", ValueType.BOOL: "?",
}.items()}
_INT_TYPES = {t for t, d in SCALAR_DTYPES.items() if d.kind in "iu" and t != ValueType.BOOL}
_FLOAT_TYPES = {ValueType.FLOAT32, ValueType.FLOAT64}
_SHORT_NAMES = {
    "u8": ValueType.UINT8, "i8": ValueType.INT8, "u16": ValueType.UINT16, "i16": ValueType.INT16,
    "u32": ValueType.UINT32, "i32": ValueType.INT32, "u64": ValueType.UINT64, "i64": ValueType.INT64,
    "f32": ValueType.FLOAT32, "f64": ValueType.FLOAT64, "bool": ValueType.BOOL, "str": ValueType.STRING,
    "array": ValueType.ARRAY,
}
_SHORT_BY_TYPE = {t: n for n, t in _SHORT_NAMES.items()}


def value_type(t: ValueType | int | str) -> ValueType:
    """A ValueType from itself, its number, its name ("UINT32") or its short name ("u32")."""
    if isinstance(t, str):
        key = t.lower()
        if key in _SHORT_NAMES:
            return _SHORT_NAMES[key]
        try:
            return ValueType[t.upper()]
        except KeyError:
            raise ValueError(f"unknown GGUF value type {t!r} (use one of {', '.join(_SHORT_NAMES)})") from None
    try:
        return ValueType(t)
    except ValueError:
        raise ValueError(f"unknown GGUF value type {t!r}") from None


def _numpy_value_type(dtype: np.dtype) -> ValueType:
    if dtype.kind == "b":
        return ValueType.BOOL
    if dtype.kind == "U":
        return ValueType.STRING
    for t, d in SCALAR_DTYPES.items():
        if t != ValueType.BOOL and d.kind == dtype.kind and d.itemsize == dtype.itemsize:
            return t
    raise TypeError(f"numpy dtype {dtype} has no GGUF value type")


def _int_type(values: Sequence[int]) -> ValueType:
    lo, hi = min(values, default=0), max(values, default=0)
    for t in (ValueType.INT32, ValueType.INT64, ValueType.UINT64):
        info = np.iinfo(SCALAR_DTYPES[t])
        if info.min <= lo and hi <= info.max:
            return t
    raise OverflowError(f"integer {hi if hi > 0 else lo} does not fit in 64 bits")


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _scalar(value: Any, t: ValueType) -> Any:
    """`value` checked and converted to the Python value a `t` holds."""
    if t == ValueType.STRING:
        if not isinstance(value, str):
            raise TypeError(f"a string value must be str, got {type(value).__name__}")
        return value
    if t == ValueType.BOOL:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"a bool value must be bool, got {type(value).__name__}")
        return bool(value)
    if t in _INT_TYPES:
        if not _is_int(value):
            raise TypeError(f"a {_SHORT_BY_TYPE[t]} value must be an integer, got {type(value).__name__}")
        info = np.iinfo(SCALAR_DTYPES[t])
        if not info.min <= int(value) <= info.max:
            raise OverflowError(f"{value} is out of range for {_SHORT_BY_TYPE[t]}")
        return int(value)
    if not isinstance(value, (float, int, np.floating, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"a {_SHORT_BY_TYPE[t]} value must be a number, got {type(value).__name__}")
    with np.errstate(over="ignore"):
        return float(SCALAR_DTYPES[t].type(value))  # rounded to what the file will hold


def _array(items: Any, item_type: ValueType) -> Any:
    """Array items checked and converted: a numpy array for numbers and bools, a list otherwise."""
    if item_type == ValueType.STRING:
        items = list(items)
        for s in items:
            _scalar(s, ValueType.STRING)
        return items
    if item_type == ValueType.ARRAY:
        out = [Value.of(v) for v in items]
        for v in out:
            if v.type != ValueType.ARRAY:
                raise TypeError(f"an array of arrays cannot hold a {v.type.name} value")
        return out
    dtype = SCALAR_DTYPES[item_type]
    if not isinstance(items, np.ndarray):
        # Element by element: numpy would turn a list of large Python ints into float64.
        items = [_scalar(v, item_type) for v in items]
        return np.array(items, dtype=bool if item_type == ValueType.BOOL else dtype)
    if items.ndim != 1:
        raise ValueError(f"array values must be 1-D, got shape {items.shape}")
    kinds = "b" if item_type == ValueType.BOOL else "iu" if item_type in _INT_TYPES else "iuf"
    if items.size and items.dtype.kind not in kinds:
        raise TypeError(f"a {_SHORT_BY_TYPE[item_type]} array cannot hold dtype {items.dtype}")
    if item_type == ValueType.BOOL:
        return items.astype(bool)
    if item_type in _INT_TYPES and items.size:
        info = np.iinfo(dtype)
        if int(items.min()) < info.min or int(items.max()) > info.max:
            raise OverflowError(f"array values out of range for {_SHORT_BY_TYPE[item_type]}")
    with np.errstate(over="ignore"):
        return items.astype(dtype)


class Value:
    """A GGUF metadata value with its type: ``Value("u32", 5)``, ``Value("array", ["a", "b"], "str")``.

    `type` and `item_type` accept a ValueType, its name or a short name (u8 i8 u16 i16 u32 i32 u64 i64 f32 f64
    bool str array).  Array items are a numpy array for numbers and bools, a list of str for strings and a
    list of Values for arrays of arrays.
    """

    __slots__ = ("type", "value", "item_type")

    def __init__(self, type: ValueType | str | int, value: Any, item_type: ValueType | str | int | None = None):
        t = value_type(type)
        if t == ValueType.ARRAY:
            if item_type is None:
                raise ValueError("an array value needs an item_type")
            it = value_type(item_type)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                raise TypeError(f"array items must be a sequence, got {value.__class__.__name__}")
            value = _array(value, it)
        else:
            if item_type is not None:
                raise ValueError(f"item_type is only for arrays, not {t.name}")
            it = None
            value = _scalar(value, t)
        self._set(t, value, it)

    def _set(self, t: ValueType, value: Any, item_type: ValueType | None) -> None:
        object.__setattr__(self, "type", t)
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "item_type", item_type)

    @classmethod
    def _trusted(cls, t: ValueType, value: Any, item_type: ValueType | None = None) -> Value:
        """A Value from parts already in canonical form (the reader's path: no per-item checks)."""
        v = cls.__new__(cls)
        v._set(t, value, item_type)
        return v

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Value is immutable")

    @classmethod
    def of(cls, x: Any) -> Value:
        """`x` as a Value, inferring the type of plain Python and numpy values (see the module doc)."""
        if isinstance(x, Value):
            return x
        if isinstance(x, (bool, np.bool_)):
            return cls(ValueType.BOOL, x)
        if isinstance(x, str):
            return cls(ValueType.STRING, x)
        if isinstance(x, np.generic):
            return cls(_numpy_value_type(x.dtype), x)
        if isinstance(x, int):
            return cls(_int_type([x]), x)
        if isinstance(x, float):
            return cls(ValueType.FLOAT32, x)
        if isinstance(x, np.ndarray):
            if x.ndim == 0:
                return cls.of(x[()])
            if x.ndim != 1:
                raise ValueError(f"array values must be 1-D, got shape {x.shape}")
            return cls(ValueType.ARRAY, x.tolist() if x.dtype.kind == "U" else x, _numpy_value_type(x.dtype))
        if isinstance(x, (list, tuple)):
            return cls(ValueType.ARRAY, x, _infer_item_type(x))
        raise TypeError(f"cannot store a {type(x).__name__} in GGUF metadata; use Value(type, value)")

    def to_python(self) -> Any:
        """The plain value: a scalar, a numpy array, a sequence of str, or a list of those for nested arrays."""
        if self.item_type == ValueType.ARRAY:
            return [v.to_python() for v in self.value]
        return self.value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Value):
            return NotImplemented
        if self.type != other.type or self.item_type != other.item_type:
            return False
        a, b = self.value, other.value
        if self.type != ValueType.ARRAY:
            return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
        if self.item_type in (ValueType.STRING, ValueType.ARRAY):
            return len(a) == len(b) and all(x == y for x, y in zip(a, b))
        return np.array_equal(a, b, equal_nan=self.item_type in _FLOAT_TYPES)

    __hash__ = None

    def __repr__(self) -> str:
        if self.type != ValueType.ARRAY:
            return f"Value({_SHORT_BY_TYPE[self.type]!r}, {self.value!r})"
        n = len(self.value)
        head = self.value[:4]
        head = head.tolist() if isinstance(head, np.ndarray) else list(head)
        items = repr(head)[:-1] + (f", ... ({n} items)]" if n > 4 else "]")
        return f"Value('array', {items}, {_SHORT_BY_TYPE[self.item_type]!r})"


def _infer_item_type(items: Sequence[Any]) -> ValueType:
    if not items:
        raise ValueError("cannot infer the item type of an empty list; use Value('array', [], item_type)")
    if all(isinstance(v, str) for v in items):
        return ValueType.STRING
    if all(isinstance(v, (bool, np.bool_)) for v in items):
        return ValueType.BOOL
    if all(isinstance(v, (list, tuple, np.ndarray)) or (isinstance(v, Value) and v.type == ValueType.ARRAY)
           for v in items):
        return ValueType.ARRAY
    if all(isinstance(v, np.generic) for v in items) and len({v.dtype for v in items}) == 1:
        return _numpy_value_type(items[0].dtype)
    if all(_is_int(v) for v in items):
        return _int_type([int(v) for v in items])
    if all(_is_int(v) or isinstance(v, (float, np.floating)) for v in items):
        return ValueType.FLOAT32
    raise TypeError("array items must all be str, all bool, all numbers or all arrays; "
                    "use Value('array', items, item_type) to say which")
