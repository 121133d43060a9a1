"""Helpers shared by the benchmark scripts (run as `python bench/<name>.py`)."""

from __future__ import annotations

from pathlib import Path


def filesystem_of(path: Path) -> str:
    """'<type> on <device>' of the mount holding `path`, from /proc/self/mounts."""
    best, found = "", "unknown filesystem"
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                device, mount_point, fs_type = line.split()[:3]
                inside = str(path) == mount_point or str(path).startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best):
                    best, found = mount_point, f"{fs_type} on {device}"
    except OSError:
        pass
    return found
