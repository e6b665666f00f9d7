"""Where the model looks: the MEAP paper's attention analysis on inputs whose segments are known.

A probe is a needle-in-a-haystack input built from token segments, so every position's segment is exact:
``before`` (haystack), ``answer`` (the needle sentence), ``after`` (haystack), ``query`` (the question).
Rows of the analysis are the query tokens; statistics are averaged over heads, query rows and probes,
per layer and over layers:

* ``segment_mass``: attention mass from the query onto each segment (the paper: 9.4% NTP vs 34.5% MEAP
  onto the answer);
* ``entropy``: entropy (nats) of the query rows' attention distributions;
* with ``[MASK]`` (models trained with it: a meap run of objective ``meap``, or a model directory whose
  tokenizer holds it; never an NTP run, whose ``[MASK]`` row was never trained), a masked copy X_M of each
  probe with ``mask_ratio`` of the context tokens (before/after) replaced: ``score_decay`` = (A_N − A_M) / A_N,
  A the query's attention mass on the masked keys in the clean input X_N and in X_M (the paper: ≈ 53%), and
  ``variance_increase`` = (V_M − V_N) / V_N, V the variance of the query's attention over the unmasked
  context keys (the paper: ≈ 7.8%). Undefined values (a zero denominator) are ``None``.

Weights come from the eager kernel (the fused ones never materialise them) and are reduced inside a
forward hook on each attention module, one layer at a time, so memory stays that of one layer's
(heads × T × T) matrix however deep the model is. The kind whole: its config, headline, report section and
record, :data:`KIND`; one ``attention.json`` covers every model analysed, so the kind finds each run's entry
itself (:func:`entries`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from meap.config import checked
from meap.config.commands import CommandConfig, haystack_option, no_progress_option, option, output_option
from meap.constants import DEFAULT_MASK_RATIO, mask_ratio_problem
from meap.errors import UserError
from meap.eval.kind import EvaluationKind, format_value
from meap.rundir import ARTIFACT_DIRS, RunDir
from meap.touchpoints import attention_kernel

if TYPE_CHECKING:
    import torch

SEGMENTS = ("before", "answer", "after", "query")


@dataclass
class AttentionConfig(CommandConfig):
    model: list[str] = option(
        "one or more: Hugging Face model directories, hub ids, meap run directories, `smollm2-135m`",
        factory=list,
        required=True,
        metavar="MODEL",
    )
    output: str = output_option("directory for attention.json and the plots")
    samples: int = option("probes (needle inputs) per model", 8)
    length: int = option("probe length in model tokens", 1024, metavar="TOKENS")
    haystack: list[str] = haystack_option(
        "files, directories or globs (read as `meap prepare` reads them), `builtin` (Paul "
        "Graham essays) or `builtin-prose` (default: builtin)"
    )
    mask_ratio: float = option("context share masked in the masked copy", DEFAULT_MASK_RATIO, metavar="RATIO")
    seed: int = option("seed of the probes' needles and masks", 0)
    no_progress: bool = no_progress_option("no progress bars (none either when stderr is not a terminal)")

    def problems(self) -> list[str]:
        found = (
            [] if self.samples >= 1 and self.length >= 8 else ["attention: expected --samples >= 1 and --length >= 8"]
        )
        if problem := mask_ratio_problem(self.mask_ratio, zero=False):
            found.append(f"--mask-ratio: {problem}")
        return found


def build_probes(tokenizer, haystack: str, *, length: int, samples: int, seed: int = 0) -> list[dict]:
    """``samples`` probes of about ``length`` tokens: ``{"input_ids", "bounds": {segment: [start, end)}, ...}``.

    The needle sits at a sentence-free random depth in 10-90% of the context; its value is random.
    """
    from meap.eval.niah_data import random_needle

    haystack_ids = tokenizer(haystack, add_special_tokens=False, verbose=False)["input_ids"]
    rng = random.Random(seed)
    probes = []
    for _ in range(samples):
        needle = random_needle(rng)
        answer = tokenizer(" " + needle.text + " ", add_special_tokens=False)["input_ids"]
        query = tokenizer(f"\n\nQuestion: {needle.question}\nAnswer:", add_special_tokens=False)["input_ids"]
        context = length - len(answer) - len(query)
        if context < 2 or context > len(haystack_ids):
            raise UserError(
                f"--length: {length} tokens do not fit a probe (needle and question take "
                f"{len(answer) + len(query)}, the haystack has {len(haystack_ids)})"
            )
        start = rng.randrange(0, len(haystack_ids) - context + 1)
        cut = round(context * rng.uniform(0.1, 0.9))
        pieces = {
            "before": haystack_ids[start : start + cut],
            "answer": answer,
            "after": haystack_ids[start + cut : start + context],
            "query": query,
        }
        bounds, ids = {}, []
        for name in SEGMENTS:
            bounds[name] = [len(ids), len(ids) + len(pieces[name])]
            ids += pieces[name]
        probes.append({"input_ids": ids, "bounds": bounds, "answer": needle.answer})
    return probes


def attention_modules(model) -> list[torch.nn.Module]:
    """The model's attention modules in layer order: where a forward hook sees each layer's weights alone."""
    found = [m for m in model.modules() if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]
    if not found:
        raise UserError(f"{type(model).__name__}: no attention modules with a layer index found to analyse")
    return sorted(found, key=lambda m: m.layer_idx)


class _Recorder:
    """Forward hooks that reduce each layer's attention weights to the query rows' statistics."""

    def __init__(self, modules: list[torch.nn.Module]):
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]
        self.rows: slice | None = None
        self.masked: torch.Tensor | None = None  # bool over the context keys (the positions before the query)
        self.bounds: dict = {}
        self.layers: list[dict] = [{} for _ in modules]

    def _hook(self, index: int):
        def hook(module, inputs, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise RuntimeError("attention weights were not returned; the analysis needs the eager kernel")
            import torch

            rows = weights[0, :, self.rows, :].float()  # (heads, query rows, keys)
            stats = {name: rows[..., slice(*self.bounds[name])].sum(-1).mean().item() for name in SEGMENTS}
            stats["entropy"] = -torch.special.xlogy(rows, rows).sum(-1).mean().item()
            if self.masked is not None:
                context = rows[..., : len(self.masked)]
                stats["masked_mass"] = context[..., self.masked].sum(-1).mean().item()
                stats["unmasked_variance"] = context[..., ~self.masked].var(-1).mean().item()
            self.layers[index] = stats

        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def analyse(
    model,
    probes: list[dict],
    *,
    mask_token_id: int | None = None,
    mask_ratio: float = DEFAULT_MASK_RATIO,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Per-layer and averaged attention statistics of ``model`` on ``probes`` (see the module docstring);
    ``mask_ratio`` as :class:`AttentionConfig` checks it."""
    import torch
    from tqdm.auto import tqdm

    with torch.no_grad():
        previous = attention_kernel(model)
        model.set_attn_implementation("eager")
        modules = attention_modules(model)
        recorder = _Recorder(modules)
        device = next(model.parameters()).device
        generator = torch.Generator().manual_seed(seed)
        per_probe: list[list[dict]] = []
        try:
            for probe in tqdm(probes, desc="attention", unit="probe", disable=not progress):
                ids = torch.tensor([probe["input_ids"]], device=device)
                bounds = probe["bounds"]
                masked_ids, masked = (
                    (None, None)
                    if mask_token_id is None
                    else _masked(ids, bounds, mask_ratio, mask_token_id, generator)
                )
                recorder.bounds, recorder.rows, recorder.masked = bounds, slice(*bounds["query"]), masked
                model(input_ids=ids, use_cache=False)  # X_N: segment statistics, and those of the keys to be masked
                clean = [dict(layer) for layer in recorder.layers]
                if masked is not None:
                    model(input_ids=masked_ids, use_cache=False)  # X_M
                    for layer, masked_stats in zip(clean, recorder.layers):
                        layer.update(
                            clean_masked_mass=layer.pop("masked_mass"),
                            masked_mass=masked_stats["masked_mass"],
                            clean_variance=layer.pop("unmasked_variance"),
                            masked_variance=masked_stats["unmasked_variance"],
                        )
                per_probe.append(clean)
        finally:
            recorder.close()
            model.set_attn_implementation(previous)
        return _summarise(per_probe, masked=mask_token_id is not None)


def _masked(ids: torch.Tensor, bounds: dict, mask_ratio: float, mask_token_id: int, generator: torch.Generator):
    """The masked copy X_M, drawn as training draws masks (:func:`meap.masking.mask_inputs`): ``mask_ratio`` of
    the haystack (the context before the query, never the needle) hidden. Returns its ids and which context
    positions it hides."""
    import torch

    from meap.masking import mask_inputs

    context = bounds["query"][0]
    eligible = torch.zeros(ids.shape, dtype=torch.bool)
    eligible[0, :context] = True
    eligible[0, slice(*bounds["answer"])] = False
    masked_ids, mask = mask_inputs(ids.cpu(), mask_ratio, mask_token_id, eligible=eligible, generator=generator)
    return masked_ids.to(ids.device), mask[0, :context].to(ids.device)


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator <= 1e-12 else numerator / denominator


def _summarise(per_probe: list[list[dict]], masked: bool) -> dict:
    layers = []
    for index in range(len(per_probe[0])):
        stats = [probe[index] for probe in per_probe]
        mean = {key: sum(s[key] for s in stats) / len(stats) for key in stats[0]}
        layer = {"layer": index, "segment_mass": {name: mean[name] for name in SEGMENTS}, "entropy": mean["entropy"]}
        if masked:
            layer["score_decay"] = _ratio(mean["clean_masked_mass"] - mean["masked_mass"], mean["clean_masked_mass"])
            layer["variance_increase"] = _ratio(
                mean["masked_variance"] - mean["clean_variance"], mean["clean_variance"]
            )
        layers.append(layer)
    average = {
        "segment_mass": {name: sum(one["segment_mass"][name] for one in layers) / len(layers) for name in SEGMENTS},
        "entropy": sum(one["entropy"] for one in layers) / len(layers),
    }
    if len(per_probe) > 1:  # each probe's mass averaged over layers: their spread, as a 95% t-interval's half-width
        from scipy import stats

        quantile = stats.t.ppf(0.975, len(per_probe) - 1)
        average["segment_mass_half_width"] = {
            name: float(quantile * stats.sem([sum(layer[name] for layer in probe) / len(probe) for probe in per_probe]))
            for name in SEGMENTS
        }
    if masked:
        for key in ("score_decay", "variance_increase"):
            values = [one[key] for one in layers if one[key] is not None]
            average[key] = sum(values) / len(values) if values else None
    return {"samples": len(per_probe), "layers": layers, "average": average}


def _trained_objective(spec: str) -> str | None:
    """``ntp`` or ``meap`` for a meap run (given as its directory or its ``final/``), else None (unknown)."""
    from meap.rundir import FINAL_DIR, RunDir

    path = Path(spec)
    return RunDir(path.parent if path.name == FINAL_DIR else path).objective()


def evaluate(config: AttentionConfig) -> dict:
    """Analyse each of ``config.model`` on the same probes; write ``attention.json``, ``segment_mass.png`` and
    ``layers.png`` to ``config.output``."""
    from meap.eval.niah_data import read_haystack
    from meap.models import load_causal_lm
    from meap.plots import plot_attention_layers, plot_segment_mass
    from meap.tokens import mask_token_id

    checked(config)
    length, mask_ratio, seed = config.length, config.mask_ratio, config.seed
    text, haystack_name = read_haystack(config.haystack)
    results = {}
    for spec in config.model:
        model, tokenizer = load_causal_lm(spec)
        limit = int(getattr(model.config, "max_position_embeddings", 0) or 10**9)
        if length > limit:
            raise UserError(f"--length: {length} tokens exceed the context of {spec} ({limit})")
        probes = build_probes(tokenizer, text, length=length, samples=config.samples, seed=seed)
        mask_id = mask_token_id(tokenizer)
        if mask_id is not None and mask_id >= model.get_input_embeddings().weight.shape[0]:
            mask_id = None  # a tokenizer entry the model cannot embed
        trained = _trained_objective(spec)
        masked_pass = mask_id is not None and trained != "ntp"  # an NTP run never learned what [MASK] is
        results[spec] = {
            **analyse(
                model,
                probes,
                mask_token_id=mask_id if masked_pass else None,
                mask_ratio=mask_ratio,
                seed=seed,
                progress=not config.no_progress,
            ),
            "has_mask_token": mask_id is not None,
            "masked_pass": masked_pass,
            "objective": trained,
        }
        del model
    summary = {"haystack": haystack_name, "length": length, "mask_ratio": mask_ratio, "seed": seed, "models": results}
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    summary = KIND.write_summary(output, summary)
    plot_segment_mass(results, output / "segment_mass.png")
    plot_attention_layers(results, output / "layers.png")
    return summary


def headline(summary: dict, output: str | Path) -> str:
    lines = []
    for name, result in summary["models"].items():
        average = result["average"]
        decay = average.get("score_decay")
        lines.append(
            f"{name}: answer mass {average['segment_mass']['answer']:.3f}, entropy {average['entropy']:.2f}"
            + (f", score decay {decay:.3f}" if decay is not None else "")
            + f" -> {output}"
        )
    return "\n".join(lines)


def entries(loaded: dict[str, dict]) -> dict[str, tuple[dict, Path]]:
    """run name -> (its model's entry, the attention.json holding it). One `meap analyze attention` may cover
    several runs (its models are their directories), and it may be saved inside any of them."""

    def same(model: str, run: Path) -> bool:
        return Path(model).resolve() in (run.resolve(), RunDir(run).final_dir.resolve())

    found: dict[str, tuple[dict, Path]] = {}
    for run in loaded.values():
        for path in sorted(run["path"].rglob(KIND.summary_file)):
            if ARTIFACT_DIRS & set(path.relative_to(run["path"]).parts[:-1]):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict) or data.get("kind") != KIND.name:
                continue
            for model, result in data["models"].items():
                for name, other in loaded.items():
                    if name not in found and same(model, other["path"]):
                        found[name] = (result, path)
            owner = next(name for name, other in loaded.items() if other is run)
            if owner not in found and len(data["models"]) == 1:  # its one model, named from another directory
                found[owner] = (next(iter(data["models"].values())), path)
    return {name: found[name] for name in loaded if name in found}


def report_section(blocks: list[tuple], loaded: dict[str, dict], output: Path) -> None:
    from meap.plots import plot_attention_layers, plot_segment_mass

    attention = entries(loaded)
    blocks.append(("h2", "Attention (from the query, mean over layers)"))
    blocks += [("p", f"{name}: absent.") for name in loaded if name not in attention]
    if not attention:
        return
    results = {name: result for name, (result, _) in attention.items()}
    blocks += [
        ("img", plot_segment_mass(results, output / "segment_mass.png").name),
        ("img", plot_attention_layers(results, output / "layers.png").name),
        (
            "table",
            ["run", "samples", *SEGMENTS, "entropy", "score decay", "variance increase", "file"],
            [
                [
                    name,
                    str(result["samples"]),
                    *[format_value(result["average"]["segment_mass"][segment]) for segment in SEGMENTS],
                    format_value(result["average"]["entropy"]),
                    format_value(result["average"].get("score_decay")),
                    format_value(result["average"].get("variance_increase")),
                    str(file),
                ]
                for name, (result, file) in attention.items()
            ],
        ),
    ]


# the paper's table reads each run's entry of attention.json (its "average"), as entries() finds it
KIND = EvaluationKind(
    "attention",
    "attention.json",
    headline,
    report_section,
    paper_rows=lambda entry: {
        "attention mass on the answer (from the query)": entry["average"]["segment_mass"]["answer"],
        "masked-key score decay": entry["average"].get("score_decay"),
    },
    paper={
        "attention mass on the answer (from the query)": "9.4% (NTP) vs 34.5% (MEAP), length 4096",
        "masked-key score decay": "about 53% (MEAP)",
    },
    entries=entries,
    command=("analyze", "attention"),
    help="attention from the query onto the needle, entropy, and the masked-key score decay "
    "(the MEAP paper's analysis)",
    config=AttentionConfig,
    evaluate=evaluate,
)
