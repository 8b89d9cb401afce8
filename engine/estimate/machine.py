"""What this machine has free: RAM, VRAM and disk at the output folder."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    """Free resources, in bytes. ``free_vram_bytes`` is 0 with no GPU; ``gpu`` names it."""

    free_ram_bytes: int
    free_vram_bytes: int
    free_disk_bytes: int
    disk_path: str
    gpu: str = ""


def probe_machine(out_dir: str | os.PathLike = ".") -> Machine:
    """Read free RAM (psutil), free VRAM (torch.cuda, when a CUDA build is installed) and free disk."""
    import psutil

    ram = psutil.virtual_memory().available
    vram, gpu = _free_vram()
    path = Path(out_dir).expanduser().resolve()
    while not path.exists() and path.parent != path:
        path = path.parent
    disk = shutil.disk_usage(path).free
    return Machine(free_ram_bytes=ram, free_vram_bytes=vram, free_disk_bytes=disk, disk_path=str(path), gpu=gpu)


def _free_vram() -> tuple[int, str]:
    # torch is only asked when already loaded or cheaply importable with CUDA; a CPU build has no VRAM.
    try:
        torch = sys.modules.get("torch")
        if torch is None:
            import torch  # noqa: PLC0415
        if torch.cuda.is_available():
            free, _total = torch.cuda.mem_get_info()
            return int(free), torch.cuda.get_device_name()
    except Exception:
        pass
    return 0, ""
