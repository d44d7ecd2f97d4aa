"""The built-in demo VLM: a tiny LLaVA (SigLIP tower, MLP projector, Llama LM) trained here.

- :mod:`vlmkit.demo.scenes` / :mod:`~vlmkit.demo.questions` / :mod:`~vlmkit.demo.dataset`: the seeded
  shapes dataset (English + Japanese, MME-style yes/no pairs and short free-form answers).
- :mod:`vlmkit.demo.model`: architecture, tokenizer and processor; :mod:`vlmkit.demo.train`: training.
- :mod:`vlmkit.eval.vqa`: answers and MME scores; :mod:`vlmkit.demo.showcase`: the main-job demo.

The trained weights ship in ``vlmkit/demo/weights`` and resolve as ``vlmkit.hub.resolve_model("demo")``.
"""
