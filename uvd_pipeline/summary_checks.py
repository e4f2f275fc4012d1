"""`verify` holds `summary.json` to the stats files it checked: its counts (the report's numbers)
must be the committed shards' own, every committed shard of its config listed, and every token shard
in `tokens/` one of this build's, made from its rendered shard's tar as it is now.

The build writes the summary from the stats; nothing read it back. An edited count (totals.sentences
96 of 16), or `image_size` (which the report shows; each shard's stats record its own), passed `verify` and the report printed it; a token shard imported into `tokens/` (another
tokenizer, another codebook) passed too, then the trainer's mixture took it and the report's code
histogram stopped with a traceback. Stats are taken in one at a time as `verify` reads them (a
build's are never all in memory)."""

from __future__ import annotations

from typing import Any

from uvd_pipeline.dedup import duplicate_counts
from uvd_pipeline.integrity import token_file
from uvd_pipeline.quality import sorted_lengths
from uvd_pipeline.summary import SUMMARY_FILE, CommittedShards
from uvd_pipeline.tokenize_stage import STALE_HINT, TokenTotals

REWRITE_HINT = "run the same build command again: it writes it anew from the committed shards"
FOREIGN_HINT = ("the trainer's mixture and the report would take it as this build's; move it out of tokens/ "
                "(import into a folder of its own)")
COUNTED = ("sentences", "images", "rejects", "shards", "by_split", "by_kind", "by_kind_task", "rejects_by_reason",
           "rejects_by_stage", "images_by_kind_task")


def _place(uri: str) -> tuple[str, str, str]:
    """(source, split, shard stem) of a stats file in `<folder>/<source>/<split>/`."""
    source, split, name = uri.rstrip("/").rsplit("/", 3)[-3:]
    return source, split, name.split(".", 1)[0]


class _Absent:
    """A field the summary does not hold: every counted one must be there (the report reads them all)."""

    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class SummaryTally:
    """The counts of the stats files `verify` found intact, to hold `summary` to (None: no summary)."""

    def __init__(self, summary: dict[str, Any] | None, config_hash: Any) -> None:
        self.summary = summary
        self.config_hash = config_hash  # build.json's
        self.rendered = CommittedShards()
        self.tokens = TokenTotals()
        self.foreign: list[tuple[str, str]] = []  # (token shard, why it is none of this build's)
        self.rendered_places: set[tuple[str, str, str]] = set()  # every rendered shard's, set by `rendered_found`
        self.tar_sha256: dict[tuple[str, str, str], Any] = {}  # intact rendered shard's place -> its tar's sha256
        self.stale: list[tuple[str, str]] = []  # (token shard, why): made from an earlier tar of its rendered shard
        self.image_sizes: set[Any] = set()  # the listed shards' (each records the size it was rendered at)
        self.unlisted: list[str] = []  # stats files of the intact rendered shards of this config it does not list
        try:
            self.listed = {(str(s["source"]), str(s["split"]), str(s["tar"]).split(".", 1)[0])
                           for s in summary["shards"]} if summary else set()
        except (KeyError, TypeError, AttributeError):
            self.listed = set()  # an unreadable summary is reported as such
            self.summary = None

    def rendered_found(self, stats_files: list[str]) -> None:
        """The stats files of every rendered shard in `rendered/`, intact or not: a token shard
        whose tar is among them is this build's, listed in the summary or not (a build stopped
        before its summary: the report names those shards)."""
        self.rendered_places = {_place(uri) for uri in stats_files}

    def add_rendered(self, uri: str, stats: dict[str, Any]) -> None:
        """An intact rendered shard: counted when the summary lists it; one of this config it does not
        list is kept for `unlisted_damage`."""
        self.tar_sha256[_place(uri)] = stats.get("tar_sha256")
        if self.summary is None:
            return
        if _place(uri) in self.listed:
            self.rendered.add(uri, stats)
            self.image_sizes.add(stats.get("image_size", ABSENT))
        elif stats.get("config_hash") == self.config_hash:
            self.unlisted.append(uri)

    def unlisted_damage(self) -> list[tuple[str, str]]:
        """(stats file, why) for each committed shard of this config the summary leaves out, in an
        output no build holds: a finished build lists every one (a resumed build takes the summary
        away before it changes a shard). One left out was taken as a build stopped before its summary
        and the counts went unjudged: a row deleted beside an edited total passed as intact."""
        listed, committed = len(self.rendered.rows), len(self.rendered.rows) + len(self.unlisted)
        return [(uri, f"committed, but {SUMMARY_FILE} does not list it (it lists {listed} of the {committed} "
                      f"committed shards of this config): edited since the build; {REWRITE_HINT}")
                for uri in self.unlisted]

    def add_token(self, uri: str, stats: dict[str, Any]) -> None:
        """An intact token shard: one of this build's (its config, a shard the summary lists), or foreign;
        stale when made from another tar than its rendered shard's (the intact ones are all added first)."""
        shard = token_file(uri, stats).uri
        tar = self.tar_sha256.get(_place(uri))
        if tar is not None and stats.get("config_hash") == self.config_hash and stats.get("rendered_sha256") != tar:
            # a rerun with --no-tokenize over grown input rewrote the tar: these tokens are of its old sentences
            self.stale.append((shard, f"stale: made from a tar of sha256 {stats.get('rendered_sha256')}, "
                                      f"rendered shard {'/'.join(_place(uri))} is now {tar} (rewritten since, by a "
                                      f"build that did not tokenize): the trainer would take tokens of sentences "
                                      f"the shard no longer holds; {STALE_HINT}"))
        if self.summary is None:
            return
        made = stats.get("config_hash")
        if made != self.config_hash and self.config_hash is not None:  # None: build.json unread, reported as such
            self.foreign.append((shard, f"a token shard of another configuration (config hash {_short(made)}, this "
                                        f"build's is {self.config_hash}): an import or another build's; {FOREIGN_HINT}"))
        elif _place(uri) not in self.rendered_places:
            self.foreign.append((shard, f"no rendered shard {'/'.join(_place(uri))} in rendered/ is its source: no "
                                        f"token shard of this build; {FOREIGN_HINT}"))
        elif _place(uri) in self.listed:
            self.tokens.add(uri, stats)

    def count_problem(self) -> str | None:
        """What the summary counts otherwise than the stats (each field named), for an output whose
        shards are all intact (a damaged one's counts are off by the damage, reported already)."""
        summary = self.summary
        if summary is None:
            return None
        problems: list[str] = []

        def held(field: str, recorded: Any, found: Any) -> None:
            if recorded != found:
                problems.append(f"{field} {_short(recorded)} (the committed shards' stats hold {_short(found)})")

        if summary.get("config_hash") != self.config_hash:
            held("config_hash", summary.get("config_hash"), self.config_hash)
        if len(self.image_sizes) == 1:  # the report shows it as the build's: the shards' own
            held("image_size", summary.get("image_size", ABSENT), next(iter(self.image_sizes)))
        per_source = self.rendered.per_source
        totals = summary.get("totals") if isinstance(summary.get("totals"), dict) else {}
        for key in ("sentences", "images", "rejects"):
            held(f"totals.{key}", totals.get(key, ABSENT), sum(entry[key] for entry in per_source.values()))
        held("totals.shards", totals.get("shards", ABSENT), len(self.rendered.rows))
        sources = summary.get("sources") if isinstance(summary.get("sources"), dict) else {}
        held("sources", sorted(sources), sorted(per_source))
        for name in sorted(set(sources) & set(per_source)):
            recorded, entry = sources[name], per_source[name]
            recorded = recorded if isinstance(recorded, dict) else {}
            for key in COUNTED:  # each one: a field deleted passed, then the report stopped on a KeyError
                found = {k: dict(v) for k, v in entry[key].items()} if key == "by_split" else entry[key]
                held(f"sources.{name}.{key}", recorded.get(key, ABSENT), dict(found) if isinstance(found, dict) else found)
            # the report's input sizes, sentence lengths and duplicate figures: edited ones were shown
            held(f"sources.{name}.inputs", recorded.get("inputs", ABSENT), entry["inputs"])
            held(f"sources.{name}.sentence_lengths", recorded.get("sentence_lengths", ABSENT),
                 sorted_lengths(entry["sentence_lengths"]))
            if "duplicates" in recorded:  # where the build's config deduplicates the source's type
                held(f"sources.{name}.duplicates", recorded["duplicates"],
                     duplicate_counts(entry["rejects_by_reason"], entry["images"], entry["rejects"],
                                      entry["rejects_by_stage"].get("download", 0)))
        rows = {(r["source"], r["split"], r["shard"]): r for r in self.rendered.rows}
        for row in summary.get("shards") or []:
            found_row = rows.get((row.get("source"), row.get("split"), row.get("shard")))
            if found_row is not None:
                for key, value in found_row.items():
                    held(f"shards[{row['source']}/{row['split']}/{row['shard']}].{key}", row.get(key), value)
        tokens, recorded_tokens = self.tokens.summary(), summary.get("tokens", ABSENT)
        if recorded_tokens != {} or tokens["sources"] or tokens["tokenizers"]:  # {}: a build of no tokens/ folder
            recorded_tokens = recorded_tokens if isinstance(recorded_tokens, dict) else {}
            held("tokens.sources", recorded_tokens.get("sources", ABSENT), tokens["sources"])
            held("tokens.tokenizers", recorded_tokens.get("tokenizers", ABSENT), tokens["tokenizers"])
        if not problems:
            return None
        return f"counts other than the committed shards', edited since the build: {'; '.join(problems)}; {REWRITE_HINT}"
