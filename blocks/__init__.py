"""Prefect Blocks: stored connection settings and secrets that tasks receive as arguments.

The embedded default (local hosts) needs none. Host, database, approver-key and webhook blocks
arrive with the SSH, backup and approval work.
"""
