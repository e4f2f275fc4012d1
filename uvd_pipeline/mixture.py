"""The training mixture of a build: the token mix asked for, turned into the trainer's mixture spec.

The paper's UVDv1 mix is given by images: single images 88.5%, image sequences 4.24%, annotated
images 7.15%, annotated video 0.06%. Every image is the same number of tokens, so these are token
shares too. A build writes `mixture.yaml` (`{split: train, data: [{glob, weight}]}`), which
`python -m trainer.fit --data OUT/mixture.yaml` reads: the trainer draws each next *sentence* from
entry i with probability w_i / sum(w). A sentence of source s costs L_s tokens on average (BOS and
EOS included in paper mode), so the token share of s is w_s L_s / sum(w L); to give source s the
token share t_s the weight must be w_s = t_s / L_s. That is the whole trick: the build knows L_s
from its token shards, the trainer need not know anything about groups.

Within a group, sources share the group's tokens in proportion to their own `mixture.sources`
weight when given, otherwise to the tokens they hold. Groups asked for but absent from the build
are reported and the other groups scaled up to fill their share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

# a source's name, as configs, mixtures and token shard rows use it (dot-free: a key's first part)
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
# sentence kind -> mixture group (the paper's four families)
KIND_GROUPS: dict[str, str] = {
    "image": "single_images",
    "video": "image_sequences", "multiview": "image_sequences", "category": "image_sequences",
    "pairs": "annotated_images", "multitask": "annotated_images",
    "annotated_video": "annotated_video",
}
GROUPS = ("single_images", "image_sequences", "annotated_images", "annotated_video")
PAPER_MIX: dict[str, float] = {"single_images": 88.5, "image_sequences": 4.24, "annotated_images": 7.15,
                               "annotated_video": 0.06}
MIXTURE_FILE = "mixture.yaml"


@dataclass(frozen=True)
class SourceTokens:
    """What one source holds in the train split of the token shards."""

    name: str
    kind: str
    sentences: int
    tokens: int


def plan_mixture(available: list[SourceTokens], group_weights: Mapping[str, float],
                 source_weights: Mapping[str, float], bos_eos: bool = True) -> dict[str, Any]:
    """Trainer weights per source and the token mix they realise, next to the mix asked for."""
    group_weights = _summable(group_weights)
    present = [s for s in available if s.sentences > 0 and s.tokens > 0]
    groups_present = {KIND_GROUPS.get(s.kind, "single_images") for s in present}
    asked_total = sum(w for w in group_weights.values() if w > 0)
    asked = {g: group_weights.get(g, 0.0) / asked_total for g in GROUPS} if asked_total else {g: 0.0 for g in GROUPS}
    reachable = sum(asked[g] for g in groups_present)
    absent = sorted(g for g in GROUPS if asked[g] > 0 and g not in groups_present)
    sources: dict[str, dict[str, Any]] = {}
    for group in GROUPS:
        members = [s for s in present if KIND_GROUPS.get(s.kind, "single_images") == group]
        if not members or not reachable:
            continue
        share = asked[group] / reachable
        weights = _summable({s.name: source_weights.get(s.name, float(s.tokens)) for s in members})
        within_total = sum(weights.values())
        for s in members:
            target = share * weights[s.name] / within_total if within_total else 0.0
            per_sentence = s.tokens / s.sentences + (2 if bos_eos else 0)
            sources[s.name] = {"group": group, "kind": s.kind, "sentences": s.sentences, "tokens": s.tokens,
                               "tokens_per_sentence": per_sentence, "target_share": target,
                               "weight": target / per_sentence}
    total_weight = sum(v["weight"] for v in sources.values())
    natural_total = sum(v["sentences"] * v["tokens_per_sentence"] for v in sources.values())
    drawn_total = sum(v["weight"] * v["tokens_per_sentence"] for v in sources.values())
    for v in sources.values():
        v["weight"] = v["weight"] / total_weight if total_weight else 0.0
        v["natural_share"] = v["sentences"] * v["tokens_per_sentence"] / natural_total if natural_total else 0.0
        v["effective_share"] = (v["weight"] * total_weight * v["tokens_per_sentence"] / drawn_total
                                if drawn_total else 0.0)
        # >1: drawn more often than it occurs (repeated sooner); <1: subsampled
        v["upsampling"] = v["effective_share"] / v["natural_share"] if v["natural_share"] else None
    by_group = {g: {"asked": asked[g],
                    "effective": sum(v["effective_share"] for v in sources.values() if v["group"] == g),
                    "natural": sum(v["natural_share"] for v in sources.values() if v["group"] == g)}
                for g in GROUPS}
    return {"groups": by_group, "sources": dict(sorted(sources.items())), "absent_groups": absent,
            "bos_eos": bos_eos}


def _summable(weights: Mapping[str, float]) -> Mapping[str, float]:
    """`weights`, scaled by the largest where their sum passes the largest float: two finite
    weights of 1e308 summed to inf, every share came out 0 and `mixture.yaml` held `data: []`
    without a word. Shares are ratios, so the scale changes none; a sum that fits is left as is."""
    if math.isfinite(sum(w for w in weights.values() if w > 0)):
        return weights
    top = max(weights.values())
    return {name: w / top for name, w in weights.items()}


def mixture_spec(plan: dict[str, Any], tokens_dir: str = "tokens", split: str = "train") -> dict[str, Any]:
    """The trainer's mixture file: globs relative to the build folder (where the file lives)."""
    return {"split": split,
            "data": [{"glob": f"{tokens_dir}/{name}/{split}/*.arrow", "weight": round(v["weight"], 12)}
                     for name, v in plan["sources"].items() if v["weight"] > 0]}


def source_tokens(token_summary: Mapping[str, Any], kinds: Mapping[str, Mapping[str, int]],
                  split: str = "train") -> list[SourceTokens]:
    """From the summary's `tokens` section and each source's sentence counts by kind; a source
    that makes several kinds counts as its most frequent one."""
    out = []
    for name, entry in sorted((token_summary.get("sources") or {}).items()):
        by_split = entry.get("by_split", {}).get(split)
        if not by_split:
            continue
        by_kind = kinds.get(name) or {"image": 1}
        kind = max(sorted(by_kind), key=lambda k: by_kind[k])
        out.append(SourceTokens(name, kind, int(by_split["sentences"]), int(by_split["tokens"])))
    return out
