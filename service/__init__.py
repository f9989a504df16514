"""The serving side of Graft: HTTP, tenants, storage and the shared backbone.

``bentoml serve service:Graft`` finds the service here; importing it is deferred so that the CLI
and the tools can use ``service.settings`` or ``service.client`` without loading BentoML.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "Graft":
        from service.app import Graft

        return Graft
    raise AttributeError(f"module 'service' has no attribute {name!r}")
