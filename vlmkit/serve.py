"""``vlmkit serve``: an OpenAI-compatible server on a model, through vLLM or llama.cpp's own server.

vlmkit does not serve anything itself: it chooses the engine and its flags from the checkpoint (the same
engine options ``--backend vllm`` uses: dtype, context, multimodal limits, the chat template vlmkit renders;
for a GGUF its mmproj and mtmd chat handler), starts the engine's server module as a child process and waits
until ``/v1/models`` answers. An HF directory goes to vLLM, a GGUF to llama-cpp-python's ``llama_cpp.server``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmkit.errors import UnsupportedError, VlmkitError

ENGINES = ("auto", "vllm", "llamacpp")
DEFAULT_PORT = 8000


@dataclass
class ServerPlan:
    """What ``vlmkit serve`` runs: the command line, its environment additions, and where it will listen."""

    engine: str
    model: str          # the name clients pass as "model"
    argv: list[str]
    env: dict[str, str]
    host: str
    port: int
    vision: bool
    files: list[Path] = field(default_factory=list)  # temporary files the server reads (chat template)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def example(self) -> str:
        """A curl request against the running server (with an image for a VLM)."""
        content: Any = "Hello!"
        if self.vision:
            content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,$(base64 -w0 scene.png)"}},
                       {"type": "text", "text": "What color is the square?"}]
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": content}],
                           "max_tokens": 32, "temperature": 0}, ensure_ascii=False)
        quoted = body.replace('"', '\\"')
        return f"curl {self.url}/chat/completions -H 'Content-Type: application/json' -d \"{quoted}\""

    def as_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "model": self.model, "url": self.url, "argv": self.argv, "env": self.env,
                "example": self.example()}


def plan_server(model: str | os.PathLike, engine: str = "auto", host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                dtype: str | None = None, verbose: bool = False, download: bool = False) -> ServerPlan:
    """Resolve MODEL, validate its files as ``run`` does, and choose the engine and its flags (nothing starts)."""
    from vlmkit.hub import resolve_model
    from vlmkit.runtime.registry import BACKENDS, gguf_files
    from vlmkit.readers import open_checkpoint

    if engine not in ENGINES:
        raise VlmkitError(None, f"unknown engine {engine!r} (use {', '.join(ENGINES)})")
    path = resolve_model(model, download=download)
    is_hf = path.is_dir() and (path / "config.json").is_file()
    ggufs = gguf_files(path)
    if engine == "auto":
        engine = "vllm" if is_hf else "llamacpp"
    if (engine == "llamacpp" and ggufs is None) or (engine == "vllm" and not is_hf):
        open_checkpoint(path).close()  # a malformed file is refused for what it is first
        needs = "a GGUF (run `vlmkit convert` first)" if engine == "llamacpp" else "an HF model directory"
        raise UnsupportedError(path, f"the {engine} server needs {needs}")
    BACKENDS[engine].validate(path)  # the readers, the chat-template sandbox, no checkpoint code: before any engine
    if engine == "llamacpp":
        return _llamacpp_plan(ggufs, _served_name(model), host, port, dtype, verbose)  # type: ignore[arg-type]
    return _vllm_plan(path, _served_name(model), host, port, dtype, verbose)


def _served_name(model: str | os.PathLike) -> str:
    """The model name clients send: what the user named (``demo``, ``zoo:llama``, a folder's name)."""
    text = os.fspath(model).rstrip("/")
    return Path(text).name if os.sep in text else text


def _vllm_plan(path: Path, name: str, host: str, port: int, dtype: str | None, verbose: bool) -> ServerPlan:
    from vlmkit.readers.model_files import read_config
    from vlmkit.runtime.prompt import uses_typed_content
    from vlmkit.runtime.transformers_backend import model_class
    from vlmkit.runtime.vllm_backend import CPU_ENV, check_vllm_can_load, engine_options, import_vllm

    from vlmkit.logs import quiet_output

    with quiet_output(verbose):
        import_vllm()
    config = read_config(path) or {}
    check_vllm_can_load(path, config)
    _, is_vlm = model_class(path)
    processor = _processor(path, is_vlm)
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(path),
            "--served-model-name", name, "--host", host, "--port", str(port)]
    argv += _flags(engine_options(config, processor, is_vlm, dtype))
    files: list[Path] = []
    tokenizer = getattr(processor, "tokenizer", processor)
    template = getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
    if template:  # the template vlmkit's backends render, whichever file of the checkpoint it came from
        handle, template_file = tempfile.mkstemp(prefix="vlmkit-chat-", suffix=".jinja")
        os.write(handle, template.encode())
        os.close(handle)
        files.append(Path(template_file))
        argv += ["--chat-template", template_file, "--chat-template-content-format",
                 "openai" if uses_typed_content(template) else "string"]
    if not verbose:
        argv += ["--uvicorn-log-level", "warning", "--disable-uvicorn-access-log"]
    env = {key: os.environ.get(key, value) for key, value in CPU_ENV.items() if key != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    if not verbose:
        env["VLLM_LOGGING_LEVEL"] = os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")
    return ServerPlan("vllm", name, argv, env, host, port, is_vlm, files)


def _processor(path: Path, is_vlm: bool) -> Any:
    import transformers

    from vlmkit.logs import quiet_transformers

    quiet_transformers()
    auto = transformers.AutoProcessor if is_vlm else transformers.AutoTokenizer
    try:
        return auto.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise VlmkitError(path, f"cannot load the tokenizer/processor: {error}") from None


def _flags(options: dict[str, Any]) -> list[str]:
    """``LLM(...)`` keyword options -> the same settings as server command-line flags."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    return argv


def _llamacpp_plan(ggufs: tuple[Path, Path | None], name: str, host: str, port: int, dtype: str | None,
                   verbose: bool) -> ServerPlan:
    if dtype is not None:
        raise UnsupportedError(ggufs[0], "a GGUF serves at the type it was converted to (vlmkit convert --dtype)")
    from vlmkit.llamacpp.loading import server_available

    if not server_available():
        raise UnsupportedError(None, "the llama.cpp server needs pip install \"llama-cpp-python[server]\"")
    model, mmproj = ggufs
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", name,
            "--host", host, "--port", str(port), "--n_ctx", "4096", "--verbose", str(verbose)]
    if mmproj is not None:  # llama.cpp's mtmd, the multimodal path vlmkit's llama.cpp backend uses
        argv += ["--clip_model_path", str(mmproj), "--chat_format", "mtmd"]
    return ServerPlan("llamacpp", name, argv, {}, host, port, mmproj is not None)


def start_server(plan: ServerPlan, log: Any = None) -> subprocess.Popen:
    """Start the server process (its output to ``log``, default: inherited)."""
    return subprocess.Popen(plan.argv, env={**os.environ, **plan.env}, stdout=log, stderr=subprocess.STDOUT if log
                            else None, start_new_session=True)


def wait_ready(plan: ServerPlan, process: subprocess.Popen, timeout_s: float = 300.0) -> None:
    """Poll ``/v1/models`` until it answers; a server that exits or never answers is a one-line error."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise VlmkitError(None, f"the {plan.engine} server exited with code {process.returncode} before it "
                                    f"was ready (run with --verbose to see its log)")
        try:
            with urllib.request.urlopen(f"{plan.url}/models", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise VlmkitError(None, f"the {plan.engine} server did not answer on {plan.url} within {timeout_s:.0f} s")


def stop_server(plan: ServerPlan, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers, and remove its temporary files."""
    import signal

    try:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout_s)
    finally:
        for path in plan.files:
            path.unlink(missing_ok=True)
