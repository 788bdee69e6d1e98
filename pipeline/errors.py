"""The failure every library call of a stage may raise: the CLI prints its message and exits 1."""

from __future__ import annotations


class StageFailed(RuntimeError):
    """The stage cannot produce a usable output; the message says why (files, keys, the fix)."""
