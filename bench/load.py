"""A closed-loop HTTP load generator: N concurrent async clients in one process (aiohttp).

Each client sends its next request as soon as the previous one answered, for a fixed duration,
so the figure is the server's sustained throughput at that concurrency. It runs on the same
cores as the server; aiohttp in one event loop keeps its own share small.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass(frozen=True)
class LoadRequest:
    path: str
    body: dict[str, Any]
    texts: int  # how many texts it carries, for texts/s
    headers: dict[str, str] = field(default_factory=dict)


#: Builds each client's next request.
RequestFactory = Callable[[random.Random], LoadRequest]


@dataclass
class LoadResult:
    seconds: float
    requests: int = 0
    texts: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")


async def _client(
    session: aiohttp.ClientSession,
    base_url: str,
    make: RequestFactory,
    rng: random.Random,
    deadline: float,
    result: LoadResult,
) -> None:
    while time.perf_counter() < deadline:
        request = make(rng)
        headers = {"Content-Type": "application/json", **request.headers}
        started = time.perf_counter()
        async with session.post(
            base_url + request.path, data=json.dumps(request.body), headers=headers
        ) as response:
            await response.read()
            status = response.status
        elapsed = (time.perf_counter() - started) * 1000
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if status == 200:
            result.requests += 1
            result.texts += request.texts
            result.latencies_ms.append(elapsed)
        else:
            result.errors += 1


async def _run(
    base_url: str, make: RequestFactory, clients: int, seconds: float, seed: int
) -> LoadResult:
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        result = LoadResult(seconds=seconds)
        deadline = started + seconds
        await asyncio.gather(
            *(
                _client(session, base_url, make, random.Random(seed + i), deadline, result)
                for i in range(clients)
            )
        )
        result.seconds = time.perf_counter() - started
        return result


def run_load(
    base_url: str, make: RequestFactory, *, clients: int, seconds: float, seed: int = 0
) -> LoadResult:
    return asyncio.run(_run(base_url, make, clients, seconds, seed))
