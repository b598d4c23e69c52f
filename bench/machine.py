"""What the benchmarks ran on: CPU, cores, memory, library versions and BLAS, git commit, load."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

from bench.common import REPO_ROOT, load_average


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _numpy_blas() -> str:
    import numpy as np

    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        description = f"{blas.get('name')} {blas.get('version')}"
        detail = blas.get("openblas configuration", "")
        if detail:
            description += f" ({detail})"
    except Exception:  # noqa: BLE001 - older numpy: no dict mode
        description = "unknown"
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            if pool.get("user_api") == "blas" and "numpy" in str(pool.get("filepath", "")):
                description += (
                    f"; runtime core type {pool.get('architecture')}, {pool.get('num_threads')} threads"
                )
                break
    except ImportError:
        pass
    return description


def _torch_backend() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    parts = [f"{torch.get_num_threads()} intra-op threads"]
    blas = getattr(torch.backends, "mkl", None)
    if blas is not None and torch.backends.mkl.is_available():
        parts.append("MKL")
    if torch.backends.mkldnn.is_available():
        parts.append("oneDNN")
    try:
        cpu = torch.backends.cpu.get_cpu_capability()
        parts.append(f"capability {cpu}")
    except Exception:  # noqa: BLE001
        pass
    return ", ".join(parts)


def _git() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}{' + uncommitted changes' if dirty else ''}" if head else None


def _redis_server(url: str = "redis://127.0.0.1:6379/0") -> str | None:
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        info = client.info("server")
        client.close()
        return f"{info.get('redis_version')} at {url}"
    except Exception:  # noqa: BLE001 - not reachable: leave it out
        return None


def describe_machine() -> dict[str, Any]:
    """A dict for the report's machine table (values are strings or numbers)."""
    flags = _cpu_flags()
    simd = [name for name in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if name in flags]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    stack = ", ".join(
        f"{name} {version}"
        for name in ("fastapi", "uvicorn", "uvloop", "httptools", "orjson", "redis")
        if (version := _version(name))
    )
    one, five, fifteen = load_average()
    return {
        "cpu_model": f"{_cpu_model()} ({', '.join(simd)})" if simd else _cpu_model(),
        "cores": cores,
        "memory_gib": _memory_gib(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "blas": _numpy_blas(),
        "torch": _version("torch"),
        "torch_backend": _torch_backend(),
        "serving_stack": stack,
        "redis_server": _redis_server(),
        "git": _git(),
        "load_average": f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) at start",
    }
