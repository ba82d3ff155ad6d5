"""Cheap outputs for the services' hot path: a fast `model_construct`, and records encoded without a model.

`Model.model_construct(**values)` walks every field's aliases and deep-copies defaults on each call
(~8 µs for a 13-field model); a settled trade builds half a dozen such records. `constructor(Model)`
precomputes the field order and defaults once and returns a function that builds the same instance:
the same `__dict__` (fields in declaration order, defaults filled in), the same `model_fields_set`
(the names passed), no validation. Values are passed by field name (not alias) and must include every
required field; unknown names are an error (model_construct would silently drop them).

`Encoded` goes one step further for the highest-volume P2P outputs: the service writes the record's key and
value bytes itself (orjson over a dict in the model's field order, timestamps from `utc_text`) and never builds
the model; `Topic.encode` and `Topic.key_of` hand those bytes on. tests/unit/test_output_bytes.py holds every
such record to the bytes pydantic gives for its validated model.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_json

try:  # the stream workers' environment has orjson; the Airflow one need not
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]

M = TypeVar("M", bound=BaseModel)

_IMMUTABLE = (type(None), str, int, bool, bytes, enum.Enum, tuple, frozenset)
_set = object.__setattr__


def constructor(cls: type[M]) -> Callable[..., M]:
    """Return `make(**values) -> cls`, equivalent to `cls.model_construct(**values)` for trusted values."""
    config = cls.model_config
    assert config.get("extra") != "allow", f"{cls.__name__}: extra='allow' is not supported"
    assert not cls.__pydantic_post_init__, f"{cls.__name__}: model_post_init is not supported"
    assert not cls.__pydantic_root_model__ and not cls.__private_attributes__, cls.__name__
    template: dict[str, Any] = {}
    required: set[str] = set()
    factories: dict[str, Callable[[], Any]] = {}
    copied: dict[str, Any] = {}
    for name, field in cls.__pydantic_fields__.items():
        if field.is_required():
            required.add(name)
            template[name] = PydanticUndefined
        elif field.default_factory is not None:
            factories[name] = field.default_factory  # type: ignore[assignment]
            template[name] = PydanticUndefined
        elif isinstance(field.default, _IMMUTABLE):
            template[name] = field.default
        else:  # a mutable default: copied per instance, as model_construct does
            copied[name] = field.default
            template[name] = PydanticUndefined
    size = len(template)
    new = cls.__new__

    def make(**values: Any) -> M:
        data = template.copy()
        data.update(values)  # keeps the declaration order of the template's keys
        if len(data) != size or not values.keys() >= required:
            unknown = sorted(values.keys() - template.keys())
            raise TypeError(f"{cls.__name__}: unknown fields {unknown}, missing {sorted(required - values.keys())}")
        for name, factory in factories.items():
            if name not in values:
                data[name] = factory()
        for name, default in copied.items():
            if name not in values:
                data[name] = copy.deepcopy(default)
        instance = new(cls)
        _set(instance, "__dict__", data)
        _set(instance, "__pydantic_fields_set__", set(values))
        _set(instance, "__pydantic_extra__", None)
        _set(instance, "__pydantic_private__", None)
        return instance

    make.__name__ = f"construct_{cls.__name__}"
    make.__qualname__ = make.__name__
    return make


class Encoded:
    """A message already encoded for its topic: `key` and `value` are the bytes `Topic.key_of`/`encode` return.

    No model is built on the hot path. Reading the record as a message (`record.trade_id`, `record.model`)
    decodes and validates `value` with the topic's contract the first time: a reader sees exactly what a Kafka
    consumer of the topic would. Not hashable, and equal only to itself: compare `model`s.
    """

    __slots__ = ("_decode", "_model", "key", "value")

    def __init__(self, key: bytes, value: bytes, decode: Callable[[bytes], Any]) -> None:
        self.key = key
        self.value = value
        self._decode = decode
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = self._decode(self.value)
        return self._model

    def __getattr__(self, name: str) -> Any:  # only for names that are not slots: the message's fields
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return f"Encoded(key={self.key!r}, value={self.value!r})"

    __hash__ = None  # type: ignore[assignment]


def dump_json(data: Any) -> bytes:
    """JSON bytes of `data` (str, int, bool, None, str enums, str-keyed dicts of those), as pydantic writes them.

    Keys stay in insertion order; no spaces. orjson does it; pydantic_core's serializer (the one models use)
    takes over for what orjson refuses (an int beyond 64 bits).
    """
    if orjson is not None:
        try:
            return orjson.dumps(data)
        except TypeError:
            pass
    return to_json(data)


@lru_cache(maxsize=1 << 12)  # an order's events, its trades and their settlement records share instants
def utc_text(ms: int) -> str:
    """The JSON text of the UTC instant `ms` (milliseconds since the epoch), as pydantic and orjson write it.

    "2026-11-24T10:00:00.041000Z"; "2026-11-24T10:00:00Z" on a whole second (no fraction, as for a datetime
    whose microsecond is 0).
    """
    second, milli = divmod(ms, 1000)
    text = _second_text(second)
    return f"{text}.{milli:03d}000Z" if milli else f"{text}Z"


def utc_text_ms(ms: int) -> str:
    """The UTC instant `ms` as ISO 8601 with exactly three fraction digits: "2026-11-24T10:00:00.041Z".

    Equal to ``datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")`` with "Z" for
    "+00:00", at a fraction of its cost (the second's text is cached).
    """
    second, milli = divmod(ms, 1000)
    return f"{_second_text(second)}.{milli:03d}Z"


@lru_cache(maxsize=1 << 12)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).isoformat()[:19]  # "YYYY-MM-DDTHH:MM:SS", year zero-padded


__all__ = ["Encoded", "constructor", "dump_json", "utc_text", "utc_text_ms"]
