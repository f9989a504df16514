"""Wiring of one serving process: settings → registry, keys, backbone, batcher, heads, jobs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service.auth import Authenticator, KeyStore
from service.backbone_process import SharedBackbone, start_backbone
from service.batcher import EmbeddingBatcher
from service.cache import HeadCache
from service.database import create_registry_engine, upgrade_schema
from service.heads import HeadService
from service.job_runner import JobRunner, process_owner_id, stale_after
from service.jobs import JobStore
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
    jobs: JobRunner

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
        jobs = JobRunner(
            JobStore(
                engine,
                owner=process_owner_id(),
                stale_after=stale_after(settings.job_heartbeat_seconds),
            ),
            heartbeat_seconds=settings.job_heartbeat_seconds,
            max_queued=settings.max_queued_jobs,
        )
        jobs.start()
        if settings.auth == "off":
            log.warning(
                "GRAFT_AUTH=off: no API keys are checked and the tenant comes from the "
                "X-Tenant-ID header; use it only on a trusted machine"
            )
        return cls(
            settings, registry, keys, Authenticator(settings, keys), backbone, batcher, heads, jobs
        )

    def close(self) -> None:
        self.jobs.close()
        self.batcher.close()
        self.backbone.close()
        self.registry.engine.dispose()
