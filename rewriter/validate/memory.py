"""Memory for validation: what is available, what a validation would need, and
a folder that keeps big recorded arrays on disk instead of in memory.

The estimate is deliberately rough and errs low, so it refuses only what
cannot fit (see :func:`estimate_validation_memory`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np

GIB = 1 << 30

# Recorded arrays at least this big go to a file (np.save) and come back one at a
# time; smaller ones are not worth a file.
SPILL_MIN_BYTES = 16 << 20


def available_memory_bytes() -> Optional[int]:
    """Memory this process can still get without swapping: ``MemAvailable`` from
    /proc/meminfo (else free physical pages), capped by a cgroup v2 limit; None if unknown."""
    available = _meminfo_available()
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = None
    room = _cgroup_room()
    if room is not None:
        available = room if available is None else min(available, room)
    return available


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> Optional[int]:
    """A container's memory limit minus what it uses (cgroup v2), if there is one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        return None


def gib(n_bytes: float) -> str:
    """``n_bytes`` in GiB (MiB below 0.01 GiB), for messages."""
    return f"{n_bytes / GIB:.3g} GiB" if n_bytes >= GIB / 100 else f"{n_bytes / (1 << 20):.3g} MiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """What validation holds at its peak (bytes).

    * ``feeds``: one suite's generated inputs (suites are made one at a time and
      regenerated from their seed when needed again) plus the user's inputs;
    * ``working``: onnxruntime's working set, taken as twice the largest tensor
      shape inference knows (a node's input and output are alive together); the
      node-by-node checks hold one activation and two outputs of a node, which
      this also covers;
    * ``recorded``: the recorded outputs that stay in memory for all runs (big
      ones go to disk, see :data:`SPILL_MIN_BYTES`, while the disk has room).
    """

    feeds: int
    working: int
    recorded: int
    spilled: int = 0  # on disk, not in memory

    @property
    def total(self) -> int:
        return self.feeds + self.working + self.recorded

    def describe(self) -> str:
        parts = [(self.feeds, "inputs"), (self.working, "activations"), (self.recorded, "recorded outputs")]
        return ", ".join(f"{gib(n)} of {what}" for n, what in parts if n >= 1 << 20)


def estimate_validation_memory(
    suite_input_bytes: int,
    user_input_bytes: int,
    largest_tensor_bytes: int,
    recorded_bytes_per_run: Iterable[int],
    runs: int,
    spill_folder: Optional[Union[str, os.PathLike]] = None,
) -> MemoryEstimate:
    """Peak memory of a validation; ``recorded_bytes_per_run`` lists the size of each
    array recorded on every run (graph outputs and exposed activations, when known)."""
    recorded = list(recorded_bytes_per_run)
    big = sum(b for b in recorded if b >= SPILL_MIN_BYTES) * runs
    small = sum(b for b in recorded if b < SPILL_MIN_BYTES) * runs
    if big and big > disk_free_bytes(spill_folder):
        small, big = small + big, 0  # no room on disk: they stay in memory
    return MemoryEstimate(suite_input_bytes + user_input_bytes, 2 * largest_tensor_bytes, small, big)


def disk_free_bytes(folder: Optional[Union[str, os.PathLike]] = None) -> int:
    try:
        return shutil.disk_usage(folder or tempfile.gettempdir()).free
    except OSError:
        return 0


class SpillFolder:
    """Keeps big arrays in files of a temporary folder (made on first use, removed
    by :meth:`close` or when this object is collected) and small ones in memory."""

    def __init__(self, min_bytes: Optional[int] = None) -> None:
        self.min_bytes = SPILL_MIN_BYTES if min_bytes is None else min_bytes
        self._folder: Optional[tempfile.TemporaryDirectory] = None
        self._count = 0

    def keep(self, array: np.ndarray) -> Union[np.ndarray, Path]:
        """``array`` itself, or the file it now lives in (the caller drops the array)."""
        if array.nbytes < self.min_bytes or array.dtype == object:
            return array
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="onnx-poolrewrite-recorded-")
        if disk_free_bytes(self._folder.name) < 2 * array.nbytes:  # leave the disk some room
            return array
        path = Path(self._folder.name) / f"{self._count}.npy"
        self._count += 1
        np.save(path, array, allow_pickle=False)
        return path

    @staticmethod
    def load(kept: Union[np.ndarray, Path]) -> np.ndarray:
        return np.load(kept, allow_pickle=False) if isinstance(kept, Path) else kept

    def close(self) -> None:
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
