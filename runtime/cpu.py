"""The CPU's name and the instruction-set features that decide inference speed.

AVX2 and AVX-512 set FP32 throughput; VNNI (x86) and the dot-product extensions (Arm) are what
make INT8 models fast. Read from /proc/cpuinfo on Linux; elsewhere the features are unknown.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# /proc/cpuinfo flag → the name people know, in the order they are shown.
FEATURES = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_tile": "AMX",
    "asimd": "NEON",
    "asimddp": "DotProd",
    "i8mm": "I8MM",
    "sve": "SVE",
}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as a benchmark reader needs it; `features` is empty when unknown."""

    name: str
    machine: str
    logical_cores: int
    features: tuple[str, ...]


def cpu_info(cpuinfo: Path = CPUINFO) -> CpuInfo:
    """Describe this machine's CPU; never raises."""
    name, flags = parse_cpuinfo(_read(cpuinfo) or "")
    return CpuInfo(
        name=name or platform.processor() or platform.machine() or "unknown",
        machine=platform.machine(),
        logical_cores=os.cpu_count() or 1,
        features=tuple(label for flag, label in FEATURES.items() if flag in flags),
    )


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(CPU name, flags) from /proc/cpuinfo text: x86 `model name`/`flags`, Arm `Features`."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    name = fields.get("model name") or fields.get("model") or fields.get("hardware") or ""
    flags = fields.get("flags") or fields.get("features") or ""
    return name, frozenset(flags.split())


@functools.lru_cache(maxsize=1)
def fingerprint() -> str | None:
    """This CPU's name and every flag it reports, as one short string: what a graph optimized
    for this CPU (its vector width, its instructions) is only valid on. None where the flags
    cannot be read (outside Linux): two such CPUs could not be told apart."""
    text = _read(CPUINFO)
    if text is None:
        return None
    name, flags = parse_cpuinfo(text)
    if not flags:
        return None
    described = " ".join([name, platform.machine(), *sorted(flags)])
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def _read(cpuinfo: Path) -> str | None:
    """/proc/cpuinfo's text; None where there is none (outside Linux)."""
    try:
        return cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
