"""Deployment states: one enum, used by the supervisor, the store and the API."""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    CRASHED = "crashed"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


# States in which an engine process exists (or is about to) and holds its slice.
RUNNING_STATES = frozenset({State.STARTING, State.LOADING, State.READY, State.STOPPING})
