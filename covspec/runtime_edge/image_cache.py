"""Images an edge holds per device, by sha256, so a device that asks about the same picture again sends 32 bytes
instead of the file (a camera frame asked several questions, a follow-up turn)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict


class DeviceImageCache:
    """LRU over (device, sha256) -> image bytes, bounded per device and in total bytes."""

    def __init__(self, per_device: int, max_bytes: int) -> None:
        self.per_device = per_device
        self.max_bytes = max_bytes
        self._images: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._images)

    def put(self, device: str, image: bytes) -> bytes:
        """Hold ``image`` for ``device``; returns its sha256."""
        digest = hashlib.sha256(image).digest()
        key = (device, digest)
        if key in self._images:
            self._images.move_to_end(key)
            return digest
        if self.per_device <= 0 or len(image) > self.max_bytes:
            return digest
        self._images[key] = image
        self._bytes += len(image)
        mine = [k for k in self._images if k[0] == device]
        for old in mine[: max(0, len(mine) - self.per_device)]:
            self._drop(old)
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._images)))
        return digest

    def get(self, device: str, digest: bytes) -> bytes | None:
        image = self._images.get((device, digest))
        if image is not None:
            self._images.move_to_end((device, digest))
        return image

    def _drop(self, key: tuple[str, bytes]) -> None:
        self._bytes -= len(self._images.pop(key))
