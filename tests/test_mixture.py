"""The build's training mixture: the asked token mix becomes trainer weights (w = share / tokens
per sentence), and the trainer's own loader, reading the build's mixture.yaml, realises it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from uvd_pipeline.config import ConfigError, parse_config
from uvd_pipeline.mixture import PAPER_MIX, SourceTokens, mixture_spec, plan_mixture


def test_weights_give_the_asked_token_shares():
    available = [SourceTokens("web", "image", 1000, 1000 * 256),       # 1-image sentences
                 SourceTokens("clips", "video", 10, 10 * 16 * 256),     # 16-image sentences
                 SourceTokens("inet", "category", 30, 30 * 16 * 256),
                 SourceTokens("coco", "pairs", 5, 5 * 16 * 256)]
    plan = plan_mixture(available, PAPER_MIX, {}, bos_eos=True)
    groups = plan["groups"]
    # annotated video is absent: the other three groups share its 0.06% in proportion
    assert plan["absent_groups"] == ["annotated_video"]
    reachable = 88.5 + 4.24 + 7.15  # the paper's shares sum to 99.95%: normalised
    assert groups["single_images"]["effective"] == pytest.approx(88.5 / reachable)
    assert groups["image_sequences"]["effective"] == pytest.approx(4.24 / reachable)
    assert groups["annotated_images"]["effective"] == pytest.approx(7.15 / reachable)
    # within a group, sources split its share by the tokens they hold (inet has 3x clips)
    s = plan["sources"]
    assert s["inet"]["effective_share"] == pytest.approx(3 * s["clips"]["effective_share"])
    # the sentence-level weights: a 16-image sentence costs 16x (plus BOS/EOS) a single image
    ratio = (s["web"]["weight"] / s["web"]["target_share"]) / (s["clips"]["weight"] / s["clips"]["target_share"])
    assert ratio == pytest.approx((16 * 256 + 2) / (256 + 2))
    assert sum(v["weight"] for v in s.values()) == pytest.approx(1.0)
    # natural mix (packed tokens): web holds 258,000 of 442,410 but is asked for 88.5%: upsampled
    natural = 1000 * 258 / (1000 * 258 + 45 * (16 * 256 + 2))
    assert s["web"]["natural_share"] == pytest.approx(natural)
    assert s["web"]["upsampling"] == pytest.approx(88.5 / reachable / natural)
    assert s["inet"]["upsampling"] < 1
    spec = mixture_spec(plan)
    assert spec["split"] == "train" and {d["glob"] for d in spec["data"]} == {
        f"tokens/{n}/train/*.arrow" for n in ("web", "clips", "inet", "coco")}
    # an explicit source weight moves the share inside its group only
    tilted = plan_mixture(available, PAPER_MIX, {"clips": 3.0, "inet": 1.0})["sources"]
    assert tilted["clips"]["target_share"] == pytest.approx(3 * tilted["inet"]["target_share"])
    assert tilted["web"]["target_share"] == pytest.approx(s["web"]["target_share"])


def test_mixture_config_errors_name_the_field():
    base = {"output": "o", "sources": [{"name": "w", "type": "laion", "path": "p"}]}
    for mixture, message in [({"groups": {"photos": 1}}, "mixture.groups: unknown group 'photos'"),
                             ({"groups": {"single_images": 0}}, "at least one group needs a positive weight"),
                             ({"sources": {"x": 1}}, "mixture.sources.x: no source is named 'x'"),
                             ({"sources": {"w": -1}}, "mixture.sources: weight of 'w' must be a finite number > 0")]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_config({**base, "mixture": mixture})
    # the mixture does not change the rendered bytes, so not the config hash either
    assert parse_config(base).content_hash() == parse_config({**base, "mixture": {"groups": {"single_images": 1}}}).content_hash()


def test_the_trainer_realises_the_build_mixture(mini_build_copy):
    from trainer.data import TokenWindows, mixture_from_args

    config, summary = mini_build_copy  # the report is written into the build
    out = Path(config.output)
    plan = summary["mixture"]
    assert set(plan["sources"]) == {"web", "inet", "clips"}
    assert plan["sources"]["web"]["group"] == "single_images" and plan["sources"]["clips"]["group"] == "image_sequences"
    spec = yaml.safe_load((out / "mixture.yaml").read_text())
    assert spec["split"] == "train"
    mixture = mixture_from_args([str(out / "mixture.yaml")])  # relative globs resolve against the file
    loader = TokenWindows(mixture, seq_len=256, batch_size=8, mode="paper", seed=3)
    for _ in range(300):
        loader.next_batch()
    drawn = loader.tokens_drawn / loader.tokens_drawn.sum()
    names = [Path(e.glob).parts[-3] for e in mixture.entries]
    realised = dict(zip(names, drawn))
    for name, entry in plan["sources"].items():
        # 600k tokens drawn: within a few points of the plan (sampling noise of ~1,000 sentences)
        assert realised[name] == pytest.approx(entry["effective_share"], abs=0.03), (name, realised, entry)
    assert realised["web"] > 0.8  # the paper mix: mostly single images, far above web's natural share
    assert plan["sources"]["web"]["natural_share"] < 0.5
    report = json.loads((out / "summary.json").read_text())["mixture"]
    assert report["groups"]["single_images"]["asked"] == pytest.approx(88.5 / 99.95)
    # the report's token-mix table shows the plan's shares
    from uvd_pipeline.report import write_report

    page = Path(write_report(str(out), max_sentences_per_group=1)["html"]).read_text()
    table = page[page.index("<h2>Token mix</h2>"):]
    web = plan["sources"]["web"]
    assert (f"<tr><td>web</td><td>single_images</td><td>{web['tokens']:,}</td><td>{web['weight']:.4g}</td>"
            f"<td>{100 * web['effective_share']:.2f}%</td>") in table


def test_finite_weights_whose_sum_overflows_give_the_shares_of_their_ratios(mini_build_copy):
    """Group weights 1e308 + 1e308 (and two sources' within a group) summed to inf: every share came
    out 0, `mixture.yaml` held `data: []` and the summary's mix all zeros, without a word. Any finite
    weights now give the shares their ratios give: the same mixture.yaml as weights 1 and 1."""
    from uvd_pipeline.config import MixtureConfig
    from uvd_pipeline.summary import write_mixture

    config, summary = mini_build_copy
    kinds = {name: s["by_kind"] for name, s in summary["sources"].items()}
    written = {}
    for weight in (1.0, 1e308):
        mixture = MixtureConfig(groups={"single_images": weight, "image_sequences": weight},
                                sources={"inet": weight, "clips": 0.75 * weight})
        plan = write_mixture(config.model_copy(update={"mixture": mixture}), summary["tokens"], kinds)
        written[weight] = yaml.safe_load((Path(config.output) / "mixture.yaml").read_text())
        assert plan["groups"]["single_images"]["asked"] == 0.5 and plan["groups"]["image_sequences"]["asked"] == 0.5
        shares = {name: v["target_share"] for name, v in plan["sources"].items()}
        assert shares == pytest.approx({"web": 0.5, "inet": 0.5 * 4 / 7, "clips": 0.5 * 3 / 7})
    assert written[1e308] == written[1.0] and len(written[1.0]["data"]) == 3
