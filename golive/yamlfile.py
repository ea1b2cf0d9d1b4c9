"""Reading a YAML file that may be careless or hostile, in bounded time and memory.

A plan is handed to golive by whoever runs it, so the reader trusts nothing about the file:
- only a regular file of at most `MAX_BYTES` is read (never a fifo or a device, which could
  block or never end), and it must be UTF-8 text;
- nesting deeper than `MAX_DEPTH`, and alias expansion past `MAX_NODES` (a "billion laughs"
  bomb) or into itself, are refused from the parsed node graph, before any value is built;
- a key given twice in one mapping is an error naming both lines: silently keeping the last
  one can turn a production plan into a staging one;
- keys are names: a key that YAML reads as a number, a boolean or null is refused;
- dates stay text, so an impossible one (2026-02-30) is reported by the plan's schema with its
  YAML path instead of crashing the parser; so do YAML 1.1's base-60 numbers (`4:00` is not
  240), and a number of more than 30 digits or a control character in a text is refused.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, ClassVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 50
MAX_NODES = 200_000

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


class YamlRefused(Exception):
    """The file cannot be read as a plan: (where, what) pairs, where is a line or empty."""

    def __init__(self, where: str, message: str, *more: tuple[str, str]) -> None:
        self.problems = [(where, message), *more]
        super().__init__("; ".join(f"{w}: {m}" if w else m for w, m in self.problems))


class _Loader(_Base):  # type: ignore[misc]
    """SafeLoader that keeps dates as text and collects duplicate keys."""

    yaml_implicit_resolvers: ClassVar[dict[Any, Any]] = {
        first: [r for r in resolvers if r[0] != _TIMESTAMP]
        for first, resolvers in _Base.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[str, str]] = []

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> Any:
        seen: dict[Any, str] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node)
            where = _line(key_node, column=True)
            if not isinstance(key, str):
                self.duplicates.append(
                    (where, f"key {key_node.value!r} is not a name; write it in quotes")
                )
            elif key in seen:
                self.duplicates.append(
                    (
                        where,
                        f"key {_short(key)} is given twice (first at {seen[key]}); "
                        "a YAML mapping takes each key once: remove one of them",
                    )
                )
            seen.setdefault(key, where)
        return super().construct_mapping(node, deep=deep)


def open_regular(path: Path, what: str, limit: int) -> int:
    """An open descriptor of `path`, if it is a regular file of 1 to `limit` bytes."""
    try:
        # O_NONBLOCK: opening a fifo must not wait for a writer; fstat then tells what it is.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise YamlRefused("", f"the {what} {path} does not exist") from None
    except OSError as error:
        raise YamlRefused("", f"cannot read the {what} {path}: {error.strerror}") from None
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = f"the {what} {path} is not a regular file ({_kind(info.st_mode)})"
    elif not 0 < info.st_size <= limit:
        problem = f"the {what} {path} is {_size(info.st_size)}; accepted: 1 byte to {_size(limit)}"
    if problem:
        os.close(fd)
        raise YamlRefused("", problem)
    return fd


def _number(loader: _Loader, node: ScalarNode, kind: str) -> Any:
    """Numbers as YAML 1.1 reads them, except base 60 (kept as text) and huge ones."""
    if ":" in node.value:
        return node.value
    if len(node.value) > 30:
        loader.duplicates.append((_line(node), f"{node.value[:20]}... is too long a number"))
        return 0
    constructor = (
        SafeConstructor.construct_yaml_int
        if kind == "int"
        else SafeConstructor.construct_yaml_float
    )
    return constructor(loader, node)


def _text(loader: _Loader, node: ScalarNode) -> str:
    text: str = SafeConstructor.construct_yaml_str(loader, node)
    if _CONTROL.search(text):
        loader.duplicates.append(
            (_line(node), "a text holds a control character (a NUL?); accepted: printable text")
        )
    return text


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_Loader.add_constructor("tag:yaml.org,2002:int", lambda loader, n: _number(loader, n, "int"))
_Loader.add_constructor("tag:yaml.org,2002:float", lambda loader, n: _number(loader, n, "float"))
_Loader.add_constructor("tag:yaml.org,2002:str", _text)


def read_bytes(path: Path, what: str = "file", limit: int = MAX_BYTES) -> bytes:
    """The file's bytes, if it is a regular file of at most `limit` bytes."""
    with os.fdopen(open_regular(path, what, limit), "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise YamlRefused("", f"the {what} {path} grew past {limit} bytes while being read")
    return data


def decode(data: bytes, what: str = "file") -> str:
    """UTF-8 text, or a refusal naming the line where it stops being text."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise YamlRefused(f"line {line}", f"the {what} is not UTF-8 text") from None
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1
        raise YamlRefused(f"line {line}", f"the {what} is binary, not YAML text (a NUL byte)")
    return text


def load(text: str) -> Any:
    """Parse YAML text into plain values, refusing what would cost unbounded time or memory."""
    loader = _Loader(text)
    try:
        _check_depth(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node)
        value = loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        raise YamlRefused(_line_of(error), f"not valid YAML: {_reason(error)}") from None
    except yaml.YAMLError as error:
        raise YamlRefused("", f"not valid YAML: {error}") from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise YamlRefused(*loader.duplicates[0], *loader.duplicates[1:])
    return value


def _check_depth(text: str) -> None:
    """Nesting depth from the event stream: the parser is iterative, the composer is not."""
    depth = 0
    for event in yaml.parse(text, Loader=_Base):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlRefused(_line(event), f"nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_size(root: Node) -> None:
    """How many values the document expands to, counting each alias as a full copy."""
    sizes: dict[int, int] = {}
    for node in _post_order(root):
        children = _children(node)
        sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
        if sizes[id(node)] > MAX_NODES:
            raise YamlRefused(
                _line(node),
                f"expands to more than {MAX_NODES} values (aliases repeating aliases?)",
            )


def _post_order(root: Node) -> list[Node]:
    """Every distinct node, children first; an alias that contains itself is refused."""
    order: list[Node] = []
    done: set[int] = set()
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            on_path.discard(id(node))
            done.add(id(node))
            order.append(node)
            continue
        if id(node) in done:
            continue
        if id(node) in on_path:
            raise YamlRefused(_line(node), "an alias refers to the value that contains it")
        on_path.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in done)
    return order


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _line(at: Node | yaml.Event, column: bool = False) -> str:
    mark = at.start_mark
    if mark is None:
        return ""
    return f"line {mark.line + 1}" + (f", column {mark.column + 1}" if column else "")


def _line_of(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def _reason(error: yaml.MarkedYAMLError) -> str:
    parts = [error.context or "", error.problem or ""]
    return " ".join(p for p in parts if p) or "cannot be parsed"


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a fifo",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a file")


def _size(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.4g} {unit}"
    return f"{count} bytes"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
