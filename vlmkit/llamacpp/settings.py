"""llama.cpp's settings for ``vlmkit run`` on the CPU, in one place.

llama.cpp's own library defaults are not its command-line tools' defaults: ``llama_context_default_params``
and ``mtmd_context_params_default`` start 4 threads whatever the machine (on a 2-core machine the threads
spin against each other), while ``llama-mtmd-cli`` uses the cores there are. What vlmkit sets:

* threads: the CPUs this process may run on (``os.sched_getaffinity``), for the language model, its batch
  evaluation and the vision encoder alike (``--threads`` overrides);
* micro-batch (``n_ubatch``): the prefill of an image's 729 tokens runs in micro-batches of this size;
* flash attention: llama.cpp's ``auto`` unless set;
* memory mapping: on, with the mapped pages of every tensor llama.cpp repacks for its CPU kernels given back
  as it goes (``vlmkit.llamacpp.loading.RepackedPages``). On the 7.5 B llava-calm2-siglip replica at q4_k_m
  (5.1 GB of GGUF, 2 cores): mapped as llama.cpp does it, 8.95 GB peak RSS; read into llama.cpp's buffers
  (``VLMKIT_LLAMACPP_MMAP=0``), 6.04 GB but its 4.3 GB are loaded 1.3 s slower; mapped and given back, the
  speed of the first and the memory of the second.

``bench/seed_scale.py --steps defaults`` measures the alternatives on a llava-calm2-siglip-shaped model through
``vlmkit run`` itself, by the environment overrides below (``VLMKIT_LLAMACPP_UBATCH=2048``,
``VLMKIT_LLAMACPP_FLASH_ATTN=0|1``, ``VLMKIT_LLAMACPP_MMAP=0|1``, ``VLMKIT_LLAMACPP_THREADS=4``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

N_UBATCH = 512
FLASH_ATTN: bool | None = None   # None: llama.cpp's auto
MMAP: bool | None = True         # mapped, repacked pages given back (see above); False: read


@dataclass(frozen=True)
class CpuSettings:
    threads: int
    n_ubatch: int
    flash_attn: bool | None
    mmap: bool | None


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not on Linux
        return os.cpu_count() or 1


def _env_flag(name: str, default: bool | None) -> bool | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value not in ("0", "false", "off")


def cpu_settings(threads: int | None = None) -> CpuSettings:
    """The settings for a run; ``threads`` (``--threads``) wins over the default and the environment."""
    env_threads = os.environ.get("VLMKIT_LLAMACPP_THREADS")
    chosen = threads or (int(env_threads) if env_threads else usable_cpus())
    return CpuSettings(threads=chosen, n_ubatch=int(os.environ.get("VLMKIT_LLAMACPP_UBATCH") or N_UBATCH),
                       flash_attn=_env_flag("VLMKIT_LLAMACPP_FLASH_ATTN", FLASH_ATTN),
                       mmap=_env_flag("VLMKIT_LLAMACPP_MMAP", MMAP))
