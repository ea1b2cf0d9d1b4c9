"""Which hosts each wave deploys to.

A wave names its hosts one of three ways:
- a count (`hosts: 1`): that many hosts not yet covered, in `targets.hosts` order;
- a percentage (`hosts: 50%`): hosts until that share of the fleet is covered by the end of
  this wave (rounded up), so `100%` always means "the rest";
- names (`hosts: [web1, web4]`): exactly those.
Named hosts are set aside first, so a count never takes a host another wave names.
Together the waves must cover every host exactly once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from golive.errors import Problem
from golive.plan import Wave

ACCEPTED = "accepted: a count (1), a share of the fleet ('50%') or a list of host names"


@dataclass(frozen=True)
class ResolvedWave:
    index: int
    wave: Wave
    hosts: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.wave.name


def resolve_waves(waves: list[Wave], hosts: list[str]) -> tuple[list[ResolvedWave], list[Problem]]:
    """Every wave's hosts, and every problem with how the waves cover the fleet."""
    problems: list[Problem] = []
    fleet = set(hosts)
    named = _claim_named_hosts(waves, hosts, problems)
    free = [h for h in hosts if h not in named]
    covered = 0
    resolved = []
    for index, wave in enumerate(waves):
        path = f"waves[{index}].hosts"
        if isinstance(wave.hosts, list):
            chosen = [h for h in wave.hosts if h in fleet]
        else:
            want = _wanted(wave.hosts, covered, len(hosts), path, problems)
            chosen, free = free[:want], free[want:]
            if want > len(chosen):
                problems.append(
                    Problem(
                        path,
                        f"{wave.hosts!r} asks for {want} more host(s), "
                        f"but only {len(chosen)} are left",
                    )
                )
        covered += len(chosen)
        resolved.append(ResolvedWave(index, wave, tuple(chosen)))
    if free:
        problems.append(
            Problem(
                "waves",
                f"cover {len(hosts) - len(free)} of {len(hosts)} hosts; "
                f"in no wave: {', '.join(free)}. End with a wave of "
                "hosts: 100% to take the rest",
            )
        )
    return resolved, problems


def _claim_named_hosts(waves: list[Wave], hosts: list[str], problems: list[Problem]) -> set[str]:
    claimed: dict[str, int] = {}
    fleet = set(hosts)
    for index, wave in enumerate(waves):
        if not isinstance(wave.hosts, list):
            continue
        for position, name in enumerate(wave.hosts):
            path = f"waves[{index}].hosts[{position}]"
            if name not in fleet:
                problems.append(
                    Problem(
                        path, f"{name!r} is not a host; accepted: {', '.join(dict.fromkeys(hosts))}"
                    )
                )
            elif name in claimed:
                problems.append(Problem(path, f"{name!r} is already in waves[{claimed[name]}]"))
            else:
                claimed[name] = index
    return set(claimed)


def _wanted(size: int | str, covered: int, fleet: int, path: str, problems: list[Problem]) -> int:
    """How many more hosts a count or percentage asks for."""
    if isinstance(size, int):
        if size < 1:
            problems.append(Problem(path, f"{size} is not a host count; {ACCEPTED}"))
            return 0
        return size
    text = size.strip()
    try:
        percent = float(text.removesuffix("%"))
    except ValueError:
        percent = -1.0
    if not text.endswith("%") or not 0 < percent <= 100:
        reason = "is over 100%" if percent > 100 else "is not a wave size"
        problems.append(Problem(path, f"{size!r} {reason}; {ACCEPTED}"))
        return 0
    target = math.ceil(fleet * percent / 100)
    if target <= covered:
        problems.append(
            Problem(
                path, f"{size!r} adds no hosts: earlier waves already cover {covered} of {fleet}"
            )
        )
    return max(target - covered, 0)
