"""The llama.cpp source tree that ships inside the llama-cpp-python sdist (convert_hf_to_gguf.py, gguf-py,
models/ggml-vocab-*.gguf), for side-by-side comparisons in benches and tests.

Found through $LLAMA_CPP_SRC, else unpacked once into the vlmkit cache from the sdist of the installed
llama-cpp-python version (``pip download``: PyPI is the one registry these machines reach).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from vlmkit.errors import VlmkitError


def llama_cpp_source(cache_dir: Path | None = None, *, fetch: bool = True) -> Path | None:
    """Path of ``vendor/llama.cpp``; None when unavailable and ``fetch`` is False."""
    if env := os.environ.get("LLAMA_CPP_SRC"):
        return Path(env)
    try:
        release = version("llama-cpp-python")
    except PackageNotFoundError:
        release = "0.3.36"
    from vlmkit.zoo import cache_root

    root = (cache_dir or cache_root()) / f"llama-cpp-python-{release}"
    tree = root / f"llama_cpp_python-{release}" / "vendor" / "llama.cpp"
    if (tree / "convert_hf_to_gguf.py").is_file():
        return tree
    if not fetch:
        return None
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   "--dest", tmp, f"llama-cpp-python=={release}"]
        if subprocess.run(command, capture_output=True).returncode != 0:
            raise VlmkitError(f"llama-cpp-python=={release}", "could not download its sdist from PyPI")
        staging = Path(tmp) / "tree"
        with tarfile.open(next(Path(tmp).glob("*.tar.gz"))) as tar:
            tar.extractall(staging, filter="data")
        if not root.exists():   # another process may have won the race; its tree is as good
            os.replace(staging, root)
    return tree


def llama_tool(name: str = "llama-perplexity", cache_dir: Path | None = None, jobs: int | None = None) -> Path:
    """A llama.cpp command-line tool (``llama-perplexity`` ...) built once with cmake from the same source
    tree as the installed llama-cpp-python, cached beside it (a few minutes on 2 cores, the first time).

    Why build instead of reusing llama-cpp-python: the reference must be llama.cpp's own program, not
    vlmkit's re-implementation of it through the bindings. Static libraries: the binary depends on no
    library path. The finished binary is renamed into place, so an interrupted build leaves none."""
    import shutil

    tree = llama_cpp_source(cache_dir)
    root = tree.parents[2]
    binary = root / "bin" / name
    if binary.is_file():
        return binary
    if shutil.which("cmake") is None:
        raise VlmkitError(tree, f"building {name} needs cmake (apt-get install cmake)")
    build = root / "build"
    configure = ["cmake", "-S", str(tree), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
                 "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
                 "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF"]
    compile_ = ["cmake", "--build", str(build), "--target", name, "-j", str(jobs or os.cpu_count() or 2)]
    for command in (configure, compile_):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise VlmkitError(tree, f"building {name} failed: {tail[0]}")
    binary.parent.mkdir(exist_ok=True)
    staging = binary.with_name(f".{name}.tmp")
    shutil.copy2(build / "bin" / name, staging)
    os.replace(staging, binary)
    return binary
