"""A per-process LRU of fitted heads, bounded by bytes, keyed by immutable version id."""

from __future__ import annotations

import threading
from collections import OrderedDict

from adapters import Head


class HeadCache:
    """Least recently used heads are evicted once their summed size passes ``max_bytes``.

    Keys are registry version ids, which are never reused, so an entry can only ever be the
    exact head it was loaded as; staleness is impossible by construction, not by invalidation.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, tuple[Head, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, version_id: int) -> Head | None:
        with self._lock:
            entry = self._entries.get(version_id)
            if entry is None:
                return None
            self._entries.move_to_end(version_id)
            return entry[0]

    def put(self, version_id: int, head: Head, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return  # larger than the whole budget: serve it uncached
        with self._lock:
            previous = self._entries.pop(version_id, None)
            if previous is not None:
                self._bytes -= previous[1]
            self._entries[version_id] = (head, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes:
                _, (_, evicted_bytes) = self._entries.popitem(last=False)
                self._bytes -= evicted_bytes

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)
