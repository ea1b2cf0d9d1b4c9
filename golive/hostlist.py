"""How a list of hosts is told to people: in full while it is short, in brief past that."""

from __future__ import annotations

from collections.abc import Sequence

# Past this many hosts a fleet is told in summaries (per wave, by outcome), failures first.
MANY_HOSTS = 25


def in_short(hosts: Sequence[str], shown: int = 8) -> str:
    """The hosts, or for many their first and last and how many in all."""
    if len(hosts) <= shown:
        return ", ".join(hosts)
    return f"{', '.join(hosts[:3])}, … {hosts[-1]}: {len(hosts)} hosts"
