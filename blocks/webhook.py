"""A webhook golive posts gate events to, stored as a Prefect Block: its URL often carries a
token, so it is a secret.

    prefect block register -m blocks.webhook
    python -c "from blocks.webhook import Webhook; Webhook(url='https://chat/hooks/T0k3n').save('ops-chat')"

A plan names it: `notify: [{webhook: ops-chat}]`.
"""

from __future__ import annotations

from typing import cast

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class Webhook(Block):
    _block_type_name = "golive webhook"
    _block_type_slug = "golive-webhook"
    _description = "Where golive posts JSON when a gate opens, is decided, or times out."

    url: SecretStr = Field(description="URL that receives the POST; may embed a token.")
    timeout: float = Field(5, description="Seconds to wait for each attempt.")
    attempts: int = Field(3, description="Tries before giving up; waits double between them.")


def load_webhook(name: str) -> Webhook:
    return cast(Webhook, Webhook.load(name))
