"""``--report out.html``: one self-contained HTML file (figures inlined as base64 PNG, no script, no network).

Sections appear for what was measured: per-category accuracy bars for each VQA run, the KLD histogram with
llama-perplexity's percentile table and the mean KLD per token position for a comparison, and the speed
table, and, when the candidate came from ``vlmkit quantize``, the relative output error of every quantized
Linear per decoder block from its ``vlmkit_quantization.json`` (:mod:`vlmkit.quant.record`). Figures are matplotlib (Agg backend, no display needed); the page is written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

STYLE = """body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}img.plot{max-width:100%;display:block;margin:1em 0}
.note{color:#666;font-size:.9em}"""


def _figure_png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(fig: Any, alt: str) -> str:
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{_figure_png(fig)}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def vqa_section(runs: dict[str, dict]) -> str:
    """Grouped bars: accuracy per category, one bar per run."""
    plt = _plt()
    categories = [c["category"] for c in next(iter(runs.values()))["categories"]]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / len(runs)
    for i, (name, result) in enumerate(runs.items()):
        acc = {c["category"]: c["acc"] for c in result["categories"]}
        ax.bar(np.arange(len(categories)) + i * width, [acc.get(c, 0) for c in categories], width, label=name)
    ax.set_xticks(np.arange(len(categories)) + width * (len(runs) - 1) / 2, categories, rotation=30, ha="right")
    ax.set_ylabel("accuracy %")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    rows = [(name, f"{r['total']:.2f} / {r['total_max']}", len(r["predictions"])) for name, r in runs.items()]
    return ("<h2>VQA accuracy per category</h2>" + _img(fig, "accuracy per category")
            + _table(("run", "MME total (yes/no)", "questions"), rows))


def compare_section(result: Any) -> str:
    """KLD histogram (log x), percentile table, mean KLD per token position."""
    from vlmkit.metrics.kld import kld_by_position

    plt = _plt()
    s, kld = result.summary, result.stats.kld
    fig, ax = plt.subplots(figsize=(9, 3.2))
    positive = kld[kld > 0]
    low = max(positive.min(), 1e-18) if len(positive) else 1e-18
    ax.hist(np.clip(kld, low, None), bins=np.logspace(np.log10(low), np.log10(max(kld.max(), low * 10)), 50))
    ax.set_xscale("log")
    ax.set_xlabel("KL divergence per token (nats)")
    ax.set_ylabel("tokens")
    histogram = _img(fig, "KLD histogram")
    positions, means = kld_by_position(result.stats)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.plot(positions, means, marker=".", linewidth=1)
    ax.set_yscale("log" if (means > 0).all() else "linear")
    ax.set_xlabel("token position in the chunk / answer")
    ax.set_ylabel("mean KLD")
    by_position = _img(fig, "KLD per token position")
    stats = [("Mean KLD", f"{s.kld_mean:.6g} ± {s.kld_unc:.2g}")]
    stats += [(f"{name} KLD", f"{value:.6g}") for name, value in s.kld_percentiles.items()]
    stats += [("PPL(ref)", f"{s.ppl_ref:.6g} ± {s.ppl_ref_unc:.2g}"), ("PPL(cand)", f"{s.ppl_cand:.6g} ± {s.ppl_cand_unc:.2g}"),
              ("PPL ratio", f"{s.ppl_ratio:.6f} ± {s.ppl_ratio_unc:.2g}"), ("Cor(ln PPL)", f"{100 * s.cor_ln_ppl:.2f} %"),
              ("RMS Δp", f"{100 * s.rms_dp:.3f} ± {100 * s.rms_dp_unc:.3f} %"),
              ("Same top p", f"{100 * s.same_top:.3f} ± {100 * s.same_top_unc:.3f} %")]
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in result.notes)
    return (f"<h2>{html.escape(result.cand)} against {html.escape(result.ref)}</h2>"
            f"<p>{s.n_tokens} scored tokens on {html.escape(result.data)}</p>" + histogram
            + _table(("statistic", "value"), stats) + by_position + notes)


def _short_names(names: Sequence[str]) -> dict[str, str]:
    """``self_attn.q_proj`` -> ``q_proj`` when the last part alone is unambiguous (keeps tables narrow)."""
    last = [name.rpartition(".")[2] for name in names]
    unique = len(set(last)) == len(last)
    return {name: short if unique else name for name, short in zip(names, last)}


def quantization_section(record: dict[str, Any]) -> str:
    """The quantizer's per-Linear relative output error: one line per Linear kind over the decoder blocks,
    the block x Linear table, and the held-out KLD the quantizer measured."""
    plt = _plt()
    linears = list(dict.fromkeys(layer["linear"] for layer in record["layers"]))
    blocks = sorted({layer["block"] for layer in record["layers"]})
    error = {(layer["block"], layer["linear"]): layer["relative_error"] for layer in record["layers"]}
    label = _short_names(linears)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for linear in linears:
        points = [(b, error[b, linear]) for b in blocks if (b, linear) in error]
        ax.plot(*zip(*points), marker="o", linewidth=1, label=label[linear])
    ax.set_xticks(blocks)
    ax.set_xlabel("decoder block")
    ax.set_ylabel("relative output error\n‖(Ŵ−W)X‖ / ‖WX‖")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    rows = [(b, *(f"{error[b, linear]:.4g}" if (b, linear) in error else "-" for linear in linears)) for b in blocks]
    spec = record["spec"]
    quality = [(name, q["n_positions"], f"{q['mean_kld']:.4g}", f"{100 * q['same_top1']:.2f} %",
                *((f"{q['last_position_mean_kld']:.4g}", f"{100 * q['last_position_same_top1']:.2f} %")
                  if "last_position_mean_kld" in q else ("-", "-")))  # records written before the column
               for name, q in record.get("quality", {}).items()]
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in record.get("notes", []))
    return (f"<h2>Quantization error per layer</h2><p>{html.escape(spec['method'].upper())} "
            f"{html.escape(str(spec.get('scheme', '')))} group {spec['group_size'] or 'channel'} of "
            f"{html.escape(record['source'])} (from {html.escape(record['file'])})</p>"
            + _img(fig, "quantization error per layer") + _table(("block", *label.values()), rows)
            + _table(("held-out set (quantizer's own check)", "positions", "mean KLD", "same top-1",
                     "last position: mean KLD", "same top-1"), quality) + notes)


def speed_section(results: Sequence[Any]) -> str:
    header = ("model", "backend", "TTFT ms", "prefill tok/s", "decode tok/s", "image encode ms", "peak RSS MB")
    rows = [(r.model, r.backend, r.time_to_first_token_ms, r.prefill_tokens_per_s, r.decode_tokens_per_s,
             "-" if r.image_encode_ms is None else r.image_encode_ms, r.peak_rss_mb) for r in results]
    return "<h2>Speed (median of runs)</h2>" + _table(header, rows)


def render(title: str, compare: Any = None, vqa: dict[str, dict] | None = None,
           speed: Sequence[Any] = ()) -> str:
    quantization = getattr(compare, "quantization", None)
    parts = [vqa_section(vqa) if vqa else "", compare_section(compare) if compare is not None else "",
             quantization_section(quantization) if quantization else "", speed_section(speed) if speed else ""]
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>\n")


def write_report(path: str | os.PathLike, title: str, **sections: Any) -> Path:
    """Render and write atomically (a temp file beside ``path``, then rename)."""
    path = Path(path)
    text = render(title, **sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
