"""Wiring of one serving process: settings → registry, keys, backbone, batcher, cache, heads."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service.auth import Authenticator, KeyStore
from service.backbone import Backbone, load_backbone
from service.batcher import EmbeddingBatcher
from service.cache import HeadCache
from service.database import create_registry_engine, upgrade_schema
from service.heads import HeadService
from service.registry import Registry
from service.settings import Settings

log = logging.getLogger("graft")

#: Texts pushed through the backbone before /readyz says ready, so the first caller does not
#: pay for lazy initialisation (oneDNN kernels, allocator pools): short, medium, long.
WARM_UP_TEXTS = (
    "hello",
    "How do I activate the card I received in the post yesterday?",
    " ".join(["Why was my transfer to another account declined twice this morning?"] * 12),
)


@dataclass
class Runtime:
    settings: Settings
    registry: Registry
    keys: KeyStore
    auth: Authenticator
    backbone: Backbone
    batcher: EmbeddingBatcher
    heads: HeadService

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        engine = create_registry_engine(settings.registry_url)
        upgrade_schema(engine)
        registry = Registry(engine)
        keys = KeyStore(engine)
        backbone = load_backbone(settings)
        batcher = EmbeddingBatcher(
            backbone, max_tokens=settings.batch_max_tokens, max_items=settings.batch_max_items
        )
        if backbone.kind == "text":
            for _ in range(2):
                batcher.embed_now(backbone.prepare(WARM_UP_TEXTS))
        heads = HeadService(
            settings, backbone, batcher, registry, HeadCache(settings.head_cache_bytes)
        )
        if settings.auth == "off":
            log.warning(
                "GRAFT_AUTH=off: no API keys are checked and the tenant comes from the "
                "X-Tenant-ID header; use it only on a trusted machine"
            )
        return cls(
            settings, registry, keys, Authenticator(settings, keys), backbone, batcher, heads
        )

    def close(self) -> None:
        self.batcher.close()
        self.registry.engine.dispose()
