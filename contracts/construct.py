"""A fast `model_construct` for the outputs the services build on the hot path.

`Model.model_construct(**values)` walks every field's aliases and deep-copies defaults on each call
(~8 µs for a 13-field model); a settled trade builds half a dozen such records. `constructor(Model)`
precomputes the field order and defaults once and returns a function that builds the same instance:
the same `__dict__` (fields in declaration order, defaults filled in), the same `model_fields_set`
(the names passed), no validation. Values are passed by field name (not alias) and must include every
required field; unknown names are an error (model_construct would silently drop them).
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

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


__all__ = ["constructor"]
