"""What a test does when a real part it needs (sshd, PostgreSQL, root) is not on this machine:
skip on a developer's machine, fail under CI=true, where a skip would hide a missing set-up."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
