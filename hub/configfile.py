"""Reading configuration files so that every mistake names the file, the line and the fix.

YAML is loaded with PyYAML's safe loader, keeping the line of every mapping and key;
TOML with ``tomllib``, the lines of its tables and keys found in the text. ``Section``
wraps a mapping and refuses unknown keys with a "did you mean ...?".
"""

from __future__ import annotations

import difflib
import re
import tomllib
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
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:  # e.g. 2027-02-30 unquoted: a date that does not exist
            what = f"{node.value!r} is" if isinstance(node.value, str) else "this value is"
            kind, line = node.tag.rsplit(":", 1)[-1], node.start_mark.line + 1
            raise ConfigError(f"{what} not a valid {kind}: {exc}", file=self.name, line=line) from exc


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
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
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
        message = f"not valid YAML: {exc.problem}"
        if exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
            # e.g. an unclosed bracket: the parser trips lines later; say where it opened.
            message += f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        raise ConfigError(message, file=str(path), line=line) from exc
    finally:
        loader.dispose()
    if data is None:
        data = _LineDict()
        data.line, data.key_lines = 1, {}
    if not isinstance(data, _LineDict):
        raise ConfigError("the file must hold a mapping (key: value) at the top", file=str(path), line=1)
    return Section(data, file=str(path), where="")


_TOML_POSITION = re.compile(r" \(at line (\d+), column (\d+)\)$")
_TOML_TABLE = re.compile(r"\s*\[\s*([A-Za-z0-9_-]+)\s*\]\s*(?:#.*)?$")
_TOML_KEY = re.compile(r"\s*([A-Za-z0-9_-]+)\s*=")


def load_toml(path: Path) -> Section:
    """A TOML file as a ``Section`` whose tables and keys know their lines (simple tables and bare keys)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message, line = str(exc), None
        if found := _TOML_POSITION.search(message):
            message, line = f"{message[: found.start()]} (column {found[2]})", int(found[1])
        raise ConfigError(f"not valid TOML: {message}", file=str(path), line=line) from exc
    top: _LineDict = _with_lines(data, 1)
    table: _LineDict | None = top
    for number, text_line in enumerate(text.splitlines(), 1):
        if found := _TOML_TABLE.match(text_line):
            value = top.get(found[1])
            table = _with_lines(value, number) if isinstance(value, dict) else None
            if table is not None:
                top[found[1]] = table
            top.key_lines.setdefault(found[1], number)
        elif text_line.lstrip().startswith("["):
            table = None  # [a.b] or [[array]]: no lines for its keys
        elif table is not None and (found := _TOML_KEY.match(text_line)):
            table.key_lines.setdefault(found[1], number)
    return Section(top, file=str(path), where="")


def _with_lines(data: dict[str, Any], line: int) -> _LineDict:
    result = _LineDict(data)
    result.line, result.key_lines = line, {}
    return result


def _type_name(value: Any) -> str:
    return "dict" if isinstance(value, dict) else "list" if isinstance(value, list) else type(value).__name__


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
            if value is None:
                raise self.error(f"must be {names}, but is empty", key)
            raise self.error(f"must be {names}, not {_type_name(value)} ({value!r})", key)
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
                lines = getattr(items, "item_lines", None)
                raise ConfigError(
                    f"{where}: each entry must be a mapping", file=self.file, line=lines[index] if lines else self.line
                )
            yield Section(item, file=self.file, where=where)

    def items(self) -> Iterator[tuple[str, Section]]:
        """A mapping of names to mappings (e.g. message types by id)."""
        for key, value in self.data.items():
            self._used.add(key)
            if not isinstance(value, dict):
                raise self.error("must be a mapping", key)
            yield key, Section(value, file=self.file, where=f"{self.where}.{key}" if self.where else key)

    def expect(self, *keys: str) -> None:
        """Name every key this section may hold and refuse any other now, before reading values:
        a misspelt key is then reported as such ("did you mean"), not as the right key missing."""
        self._used.update(keys)
        self.finish()

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
