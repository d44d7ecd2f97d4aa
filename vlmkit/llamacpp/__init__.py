"""llama.cpp behind one package: the only importer of ``llama_cpp`` (llama-cpp-python).

- :mod:`~vlmkit.llamacpp.loading`: import, log silencing (``install_log`` / ``last_error``), the AMX buffer
  workaround, safe model loading, ``bindings()`` for the runtime's C-API calls;
- :mod:`~vlmkit.llamacpp.native`: tokenize / detokenize / decode / sampler chain over the C API;
- :mod:`~vlmkit.llamacpp.mtmd`: mtmd, one wrapper (``Mtmd``: prompts with images for the run backend, image
  embeddings; ``MtmdEncoder``: the same with its own vocabulary-only text model), the model's own pixels, rows;
- :mod:`~vlmkit.llamacpp.quantize`: llama.cpp's quantizer, the exporter's quantize step.

Used by the runtime (``vlmkit.runtime.llamacpp_backend``), the exporter's quantize step and verification
(``vlmkit.eval``); it imports neither the runtime nor the exporter.
"""
