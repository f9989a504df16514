"""Wiring of one serving process: settings → registry, keys, backbone, batcher, cache, heads."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service.auth import Authenticator, KeyStore
from service.backbone_process import SharedBackbone, start_backbone
from service.batcher import EmbeddingBatcher
from service.cache import HeadCache
from service.database import create_registry_engine, upgrade_schema
from service.heads import HeadService
from service.registry import Registry
from service.settings import Settings

log = logging.getLogger("graft")


@dataclass
class Runtime:
    settings: Settings
    registry: Registry
    keys: KeyStore
    auth: Authenticator
    backbone: SharedBackbone
    batcher: EmbeddingBatcher
    heads: HeadService

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        engine = create_registry_engine(settings.registry_url)
        upgrade_schema(engine)
        registry = Registry(engine)
        keys = KeyStore(engine)
        backbone = start_backbone(settings)
        batcher = EmbeddingBatcher(
            backbone, max_tokens=settings.batch_max_tokens, max_items=settings.batch_max_items
        )
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
        self.backbone.close()
        self.registry.engine.dispose()
