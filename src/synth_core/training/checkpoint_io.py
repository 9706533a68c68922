"""Lightning checkpoint I/O that never leaves a half-written file and never runs code on load."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class SafeCheckpointIO(TorchCheckpointIO):
    """``last.ckpt`` written to a temporary file, fsynced and renamed; read with ``weights_only``.

    Lightning's own save goes through an fsspec transaction; an explicit
    write-fsync-rename makes the guarantee ours and testable (a SIGKILL at any moment
    leaves either the old or the new checkpoint), and ``weights_only=True`` keeps a
    tampered run folder from executing code on resume.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: Any, map_location: Callable | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
