"""Reading configuration files so that every mistake names the file, the line and the fix.

YAML is loaded with PyYAML's safe loader, keeping the line of every mapping and key;
``Section`` wraps a mapping and refuses unknown keys with a "did you mean ...?".
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from hub.errors import ConfigError


class _LineDict(dict[str, Any]):
    line: int
    key_lines: dict[str, int]


class _LineList(list[Any]):
    line: int


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> _LineDict:
    result = _LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise ConfigError(f"keys must be text, not {key!r}", file=loader.name, line=key_node.start_mark.line + 1)
        if key in result:
            raise ConfigError(f"{key!r} is given twice", file=loader.name, line=key_node.start_mark.line + 1)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> _LineList:
    result = _LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def load_yaml(path: Path) -> Section:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from exc
    loader = _Loader(text)
    loader.name = str(path)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(f"not valid YAML: {exc.problem}", file=str(path), line=line) from exc
    finally:
        loader.dispose()
    if data is None:
        data = _LineDict()
        data.line, data.key_lines = 1, {}
    if not isinstance(data, _LineDict):
        raise ConfigError("the file must hold a mapping (key: value) at the top", file=str(path), line=1)
    return Section(data, file=str(path), where="")


class Section:
    """A mapping read from a file; every accessor reports mistakes with file and line."""

    def __init__(self, data: dict[str, Any], *, file: str, where: str) -> None:
        self.data, self.file, self.where = data, file, where
        self.line: int | None = getattr(data, "line", None)
        self._key_lines: dict[str, int] = getattr(data, "key_lines", {})
        self._used: set[str] = set()

    def line_of(self, key: str) -> int | None:
        return self._key_lines.get(key, self.line)

    def error(self, message: str, key: str | None = None) -> ConfigError:
        place = f"{self.where}.{key}" if self.where and key else (key or self.where)
        return ConfigError(
            f"{place}: {message}" if place else message, file=self.file, line=self.line_of(key) if key else self.line
        )

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, *, required: bool = False) -> Any:
        self._used.add(key)
        if key not in self.data:
            if required:
                raise self.error(f"'{key}' is required", None)
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise self.error(f"must be {names}, not {type(value).__name__} ({value!r})", key)
        return value

    def section(self, key: str, *, required: bool = False) -> Section:
        value = self.get(key, dict, None, required=required)
        where = f"{self.where}.{key}" if self.where else key
        return Section(value if value is not None else _empty(self.line), file=self.file, where=where)

    def sections(self, key: str) -> Iterator[Section]:
        """Each mapping of a list under ``key``."""
        items = self.get(key, list, [])
        for index, item in enumerate(items):
            where = f"{self.where}.{key}[{index}]" if self.where else f"{key}[{index}]"
            if not isinstance(item, dict):
                raise ConfigError(
                    f"{where}: each entry must be a mapping", file=self.file, line=getattr(items, "line", self.line)
                )
            yield Section(item, file=self.file, where=where)

    def items(self) -> Iterator[tuple[str, Section]]:
        """A mapping of names to mappings (e.g. message types by id)."""
        for key, value in self.data.items():
            self._used.add(key)
            if not isinstance(value, dict):
                raise self.error("must be a mapping", key)
            yield key, Section(value, file=self.file, where=f"{self.where}.{key}" if self.where else key)

    def finish(self) -> None:
        """Refuse keys that nothing asked for: most are typos."""
        for key in self.data:
            if key not in self._used:
                hint = difflib.get_close_matches(key, sorted(self._used), n=1)
                suggestion = (
                    f"; did you mean '{hint[0]}'?" if hint else f"; known keys: {', '.join(sorted(self._used))}"
                )
                raise self.error(f"unknown key '{key}'{suggestion}", key)


def _empty(line: int | None) -> _LineDict:
    data = _LineDict()
    data.line, data.key_lines = line or 1, {}
    return data
