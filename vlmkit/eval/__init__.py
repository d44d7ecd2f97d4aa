"""Judging models: one model against another on the same token ids, and against a task.

- :mod:`vlmkit.eval.compare`: ``compare(ref, cand)`` — llama-perplexity's KL-divergence statistics on text
  (its chunking) or on the answer tokens of image prompts, plus tokenizer and image-embedding agreement;
- :mod:`vlmkit.eval.perplexity`: PPL of one model on a text file, llama-perplexity's chunking;
- :mod:`vlmkit.eval.vqa`: VQA answers scored the MME way, resumable, with a paired test against another run;
- :mod:`vlmkit.eval.speed`: time to first token, prefill / decode tokens/s, image-encode ms, peak RSS;
- :mod:`vlmkit.eval.report`: one self-contained HTML file with the figures;
- :mod:`vlmkit.eval.verify`: ``vlmkit convert --verify``, an ``eval compare`` of the source and its GGUF;
- :mod:`vlmkit.eval.lm_eval_model`: the ``vlmkit`` model of lm-evaluation-harness (``vlmkit eval lm-eval``);
- :mod:`vlmkit.eval.lmms_eval_model`: the ``vlmkit`` model of lmms-eval (its ``lmms_eval.models`` entry point).

Everything here talks to models only through the backends (``vlmkit.runtime``), so a check exercises what
``vlmkit run`` runs; the statistics are pure numpy in :mod:`vlmkit.metrics`.
"""
