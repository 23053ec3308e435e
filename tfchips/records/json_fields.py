"""Typed reading of untrusted JSON: each value knows the file and field it came from, and names both in errors.

`JsonFields` wraps a parsed JSON value; its accessors check a type and range and
raise `RecordError` lines such as ``records/dataset.json: splits.train.shards[0].records:
-1 is not in 0..1099511627776``. `frozen_json` and `thawed_json` make parsed values
read-only and back.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from tfchips.errors import RecordError

MAX_TEXT = 4096  # characters of a string: a name, band name or reason


def show(value) -> str:
    """``repr`` of a value for an error line, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def deeper_than(value, limit: int) -> bool:
    """Whether the arrays and objects of a parsed JSON value nest more than ``limit`` deep (no recursion)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


class JsonFields:
    """A JSON value at ``field`` of the file ``path``, with typed accessors that raise `RecordError` naming it."""

    def __init__(self, value, field: str, path: str):
        self.value, self.field, self.path = value, field, path

    def error(self, message: str, field: str | None = None) -> RecordError:
        field = self.field if field is None else field
        return RecordError(f"{self.path}: {field + ': ' if field else ''}{message}")

    def _name(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.field}[{key}]"
        return f"{self.field}.{key}" if self.field else key

    def _object(self) -> dict:
        if not isinstance(self.value, dict):
            raise self.error(f"expected an object, got {json_type(self.value)}")
        return self.value

    def get(self, key: str, optional: bool = False):
        """The value of ``key``: None where it is absent and ``optional``, else an error."""
        fields = self._object()
        if key not in fields and not optional:
            raise self.error(f"missing field {key!r}")
        return fields.get(key)

    def child(self, key: str, optional: bool = False, default=None) -> JsonFields | None:
        """``key``'s value to check further; absent or null gives ``default`` (None: no child) where ``optional``."""
        value = self.get(key, optional)
        if value is None and optional:
            return None if default is None else JsonFields(default, self._name(key), self.path)
        return JsonFields(value, self._name(key), self.path)

    def items(self) -> list[tuple[str, JsonFields]]:
        return [(key, JsonFields(value, self._name(key), self.path)) for key, value in self._object().items()]

    def elements(self, limit: int = 2**31) -> list[JsonFields]:
        if not isinstance(self.value, list):
            raise self.error(f"expected a list, got {json_type(self.value)}")
        if len(self.value) > limit:
            raise self.error(f"{len(self.value):,} entries, more than {limit:,}")
        return [JsonFields(value, self._name(i), self.path) for i, value in enumerate(self.value)]

    def choice(self, key: str, choices: tuple[str, ...], optional: bool = False, default=None) -> str | None:
        value = self.get(key, optional)
        if value is None and optional:
            return default
        if not isinstance(value, str) or value not in choices:
            raise self.error(f"{show(value)} is not one of {', '.join(choices)}", self._name(key))
        return value

    def text(self, key: str, optional: bool = False) -> str | None:
        value = self.get(key, optional)
        if value is None and optional:
            return None
        return JsonFields(value, self._name(key), self.path).as_text()

    def as_text(self) -> str:
        if not isinstance(self.value, str):
            raise self.error(f"expected a string, got {json_type(self.value)}")
        if len(self.value) > MAX_TEXT:
            raise self.error(f"a string of {len(self.value):,} characters, more than {MAX_TEXT:,}")
        return self.value

    def integer(self, key: str, low: int, high: int, nullable: bool = False) -> int | None:
        return JsonFields(self.get(key, nullable), self._name(key), self.path).as_integer(low, high, nullable)

    def as_integer(self, low: int, high: int, nullable: bool = False) -> int | None:
        if self.value is None and nullable:
            return None
        if not isinstance(self.value, int) or isinstance(self.value, bool):
            raise self.error(f"expected an integer, got {json_type(self.value)}")
        if not low <= self.value <= high:
            raise self.error(f"{self.value} is not in {low}..{high}")
        return self.value

    def number(self, key: str, nullable: bool = True) -> float | None:
        value = self.get(key, optional=nullable)
        return None if value is None and nullable else JsonFields(value, self._name(key), self.path).as_number()

    def as_number(self) -> float:
        if not isinstance(self.value, (int, float)) or isinstance(self.value, bool):
            raise self.error(f"expected a number, got {json_type(self.value)}")
        return self.value


def json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def frozen_json(value):
    """A JSON value made read-only: objects as mapping proxies, lists as tuples."""
    if isinstance(value, dict):
        return MappingProxyType({key: frozen_json(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(frozen_json(item) for item in value)
    return value


def thawed_json(value):
    """The inverse of `frozen_json`: plain dicts and lists, for `json.dumps`."""
    if isinstance(value, Mapping):
        return {key: thawed_json(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thawed_json(item) for item in value]
    return value
