"""Many hosts, named the way their owners already name them: Ansible's host ranges and INI
inventories.

A range in a host's name makes one host per value: `web[01:20]` is web01 … web20 (zero-padded
as the start is), `db-[a:c]` is db-a, db-b, db-c, `[0:100:10]` counts in tens; several ranges
multiply. An address or var with a range of as many values gives each host its own.

`targets.inventory` names an Ansible INI inventory; `targets.group` (default `all`) picks its
hosts: `[group]` sections of host lines (`name key=value …`), `[group:vars]` for the whole
group, `[group:children]` for groups within it. `ansible_host`, `ansible_port`, `ansible_user`
and `ansible_ssh_private_key_file` become the host's address, port, user and identity file;
every other key is a var for {placeholders}. YAML inventories are not read.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

MOST_HOSTS = 10_000  # a plan beyond this is a typo, or a hostile file
_RANGE = re.compile(r"\[([0-9]+|[a-zA-Z]):([0-9]+|[a-zA-Z])(?::([0-9]+))?\]")
_ANSIBLE_KEYS = {
    "ansible_host": "address",
    "ansible_ssh_host": "address",
    "ansible_port": "port",
    "ansible_ssh_port": "port",
    "ansible_user": "user",
    "ansible_ssh_user": "user",
    "ansible_ssh_private_key_file": "identity_file",
}


class InventoryError(ValueError):
    pass


def expand(pattern: str) -> list[str]:
    """Every name a pattern stands for, in order; a name without a range is itself."""
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    values, rests = _values(match, pattern), expand(tail)
    made = len(values) * len(rests)  # counted before any name is made
    if made > MOST_HOSTS:
        raise InventoryError(f"{pattern!r} makes {made} hosts; accepted: at most {MOST_HOSTS}")
    return [head + value + rest for value in values for rest in rests]


def _values(match: re.Match[str], pattern: str) -> list[str]:
    start, end, step = match.group(1), match.group(2), int(match.group(3) or 1)
    if start.isdigit() != end.isdigit() or step < 1:
        raise InventoryError(
            f"{pattern!r}: {match.group(0)} is no range; accepted: [01:20], [a:f], [0:100:10]"
        )
    if start.isdigit():
        first, last = int(start), int(end)
        if (last - first) // step >= MOST_HOSTS:
            raise InventoryError(
                f"{pattern!r} makes too many hosts; accepted: at most {MOST_HOSTS}"
            )
        width = len(start) if start.startswith("0") else 0
        values = [str(n).zfill(width) for n in range(first, last + 1, step)]
    else:
        values = [chr(c) for c in range(ord(start), ord(end) + 1, step)]
    if not values:
        raise InventoryError(f"{pattern!r}: {match.group(0)} runs backwards; accepted: [01:20]")
    if len(values) > MOST_HOSTS:
        raise InventoryError(
            f"{pattern!r} makes {len(values)} hosts; accepted: at most {MOST_HOSTS}"
        )
    return values


def expand_host(host: dict[str, Any]) -> list[dict[str, Any]]:
    """A host entry whose name is a pattern, as one entry per name; its address and string
    vars with as many values are shared out, one each."""
    names = expand(str(host["name"]))
    if len(names) == 1:
        return [host]
    spread = {
        key: _spread(host[key], len(names), host["name"]) for key in ("address",) if key in host
    }
    per_var = {
        key: _spread(value, len(names), host["name"])
        for key, value in (host.get("vars") or {}).items()
        if isinstance(value, str)
    }
    return [
        host
        | {"name": name}
        | {key: values[i] for key, values in spread.items()}
        | ({"vars": host["vars"] | {k: v[i] for k, v in per_var.items()}} if per_var else {})
        for i, name in enumerate(names)
    ]


def _spread(value: Any, count: int, name: str) -> list[Any]:
    values = expand(value) if isinstance(value, str) else [value]
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise InventoryError(
            f"{value!r} makes {len(values)} values for {count} hosts ({name!r}); accepted: a "
            "range of as many values, or one value for all"
        )
    return values


def read_inventory(path: Path, group: str, text: str | None = None) -> list[dict[str, Any]]:
    """The hosts of `group` in an Ansible INI inventory, as plan host entries. Vars apply as
    Ansible applies them: `all`'s, then each group's from parents to children, then the host
    line's own."""
    inventory = Inventory(path, path.read_text(encoding="utf-8") if text is None else text)
    known = {"all", *inventory.groups, *inventory.children}
    if group not in known:
        raise InventoryError(f"{path} has no group {group!r}; accepted: {', '.join(sorted(known))}")
    hosts = [inventory.host(name) for name in inventory.members(group)]
    if not hosts:
        raise InventoryError(f"{path}: group {group!r} has no hosts")
    return hosts


def _put(host: dict[str, Any], key: str, value: str) -> None:
    if key in _ANSIBLE_KEYS:
        number = _ANSIBLE_KEYS[key] == "port" and value.isdigit()
        host[_ANSIBLE_KEYS[key]] = int(value) if number else value
    elif not key.startswith("ansible_"):
        host["vars"][key] = value  # kept as written: 007 stays 007


class Inventory:
    """An INI inventory's groups (their host lines), group vars and child groups."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.groups: dict[str, list[tuple[str, dict[str, str]]]] = {}
        self.group_vars: dict[str, dict[str, str]] = {}
        self.children: dict[str, list[str]] = {}
        section, kind = "ungrouped", "hosts"
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split(" #")[0].strip()
            if line.startswith("["):
                section, kind = self._section(line, number)
            elif line and not line.startswith(("#", ";")):
                self._line(section, kind, line, number)
        self.lines: dict[str, list[tuple[str, dict[str, str]]]] = {}  # host: (group, fields)
        for group, hosts in self.groups.items():
            for host, fields in hosts:
                self.lines.setdefault(host, []).append((group, fields))

    def _section(self, line: str, number: int) -> tuple[str, str]:
        section, _, kind = line.strip("[]").partition(":")
        if kind not in ("", "vars", "children"):
            raise InventoryError(
                f"{self.path}, line {number}: {line} is no section; accepted: [group], "
                "[group:vars], [group:children]"
            )
        return section, kind or "hosts"

    def _line(self, section: str, kind: str, line: str, number: int) -> None:
        if kind == "vars":
            key, _, value = line.partition("=")
            self.group_vars.setdefault(section, {})[key.strip()] = value.strip().strip("'\"")
            return
        try:
            words = shlex.split(line)
        except ValueError as error:
            raise InventoryError(f"{self.path}, line {number}: {error}") from None
        if kind == "children":
            self.children.setdefault(section, []).append(words[0])
            return
        fields = dict(_pair(word, self.path, number) for word in words[1:])
        name, colon, port = words[0].rpartition(":")
        if colon and port.isdigit():  # web01:2222
            fields = {"ansible_port": port} | fields
        named = name if colon and port.isdigit() else words[0]
        self.groups.setdefault(section, []).extend((host, fields) for host in expand(named))

    def members(self, group: str, seen: frozenset[str] = frozenset()) -> list[str]:
        """Every host in the group (its own and its children's), once, in order."""
        if group in seen:
            return []
        names = list(self.groups) if group == "all" else [group]
        found = [host for name in names for host, _ in self.groups.get(name, [])]
        for name in names:
            for child in self.children.get(name, []):
                found += self.members(child, seen | {group})
        return list(dict.fromkeys(found))

    def host(self, name: str) -> dict[str, Any]:
        """The host's entry: vars of `all`, of its groups from parents to children, then of
        its own lines."""
        host: dict[str, Any] = {"name": name, "vars": {}}
        listed_in = list(dict.fromkeys(group for group, _ in self.lines[name]))
        for group in ["all", *sorted(self._with_parents(listed_in), key=self._depth)]:
            for key, value in self.group_vars.get(group, {}).items():
                _put(host, key, value)
        for _, fields in self.lines[name]:
            for key, value in fields.items():
                _put(host, key, value)
        return host

    def _parents(self, group: str) -> list[str]:
        return [parent for parent, kids in self.children.items() if group in kids]

    def _with_parents(self, groups: list[str], seen: frozenset[str] = frozenset()) -> list[str]:
        found = []
        for group in groups:
            if group not in seen and group != "all":
                found += [group, *self._with_parents(self._parents(group), seen | {group})]
        return list(dict.fromkeys(found))

    def _depth(self, group: str, seen: frozenset[str] = frozenset()) -> int:
        """How deep the group sits under the groups that hold it: parents' vars go first."""
        parents = [p for p in self._parents(group) if p not in seen]
        return 1 + max((self._depth(p, seen | {group}) for p in parents), default=0)


def _pair(word: str, path: Path, number: int) -> tuple[str, str]:
    key, equals, value = word.partition("=")
    if not equals:
        raise InventoryError(f"{path}, line {number}: {word!r} is not key=value")
    return key, value
