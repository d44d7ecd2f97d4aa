"""Generation backends behind ``vlmkit.load`` / ``vlmkit run``.

- :mod:`~vlmkit.runtime.base`: the ``Backend`` protocol, ``SamplingParams``, ``GenerationResult``.
- :mod:`~vlmkit.runtime.session`: ids -> streamed text, stop strings, timing (shared by both backends).
- :mod:`~vlmkit.runtime.prompt`: chat messages, images, chat-template rendering rules.
- :mod:`~vlmkit.runtime.registry`: the backends by name (``--backend``), ``register`` for new ones.
- :mod:`~vlmkit.runtime.transformers_backend`, :mod:`~vlmkit.runtime.llamacpp_backend` (+ ``llamacpp_logits``;
  the llama.cpp bindings live in :mod:`vlmkit.llamacpp`): the two backends. Heavy libraries are imported only
  when a backend is created.
"""
