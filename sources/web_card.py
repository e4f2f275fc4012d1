"""What a dataset card's built config (README.md `configs:`, `sources.hf_card`) says of a web
source's files: the split it gives an image or a data file, or why a file of the repo is not
read (`other_hf_config`). Asked by the readers of image folders, ImageFolders and `datasets` parquet."""

from __future__ import annotations

from sources import hf_card
from sources.imagefolder import BAD_METADATA
from sources.paths import shown_name
from sources.records import Reject
from sources.web_reader import WebReader

OTHER_HF_CONFIG = "other_hf_config"  # a parquet of a repo no split of its card's built config names
# why `datasets` loads a file of a repo without a card's data_files in no split (`hf_parquet.PATTERN_SETS`)
NO_DEFAULT_SPLIT = ("named by none of the default patterns datasets loads this repo by (without a card's data_files, "
                    "the first set naming any of its files: data/<split>-NNNNN-of-NNNNN.*, else files in split-named "
                    "folders, else split-named files)")
# what a card's built config says of a data file (`LaionSource._card_answer`): (its split, None
# for none; the config's name), or the card's error
CardAnswer = tuple[str | None, str] | hf_card.CardError


class CardSplits(WebReader):
    """The card's answers for the files a web source reads (a reader of a layout with a card derives
    from this)."""

    def _folder_card(self) -> bool:
        """Whether the folder's dataset card (README.md `configs:`, `sources.hf_card`) gives its
        splits; a card that cannot be read, or no config to build, stops the build naming the field."""
        try:
            return hf_card.card_config(self.path, self.hf_config, self.follow_links) is not None
        except hf_card.CardError as exc:
            raise ValueError(f"{self.name}: {exc} (format: folder; field {exc.field})") from None

    def _card_answer(self, data_file: str) -> CardAnswer:
        """(the split the card's built config gives a data file, None for none; that config's name),
        or a `CardError` returned (the card was changed since the build started): the card asked
        once (`hf_card.card_answer`), as each asking stats it (a request on a remote filesystem)."""
        answer = hf_card.card_answer(self.path, data_file, self.hf_config, self.follow_links)
        return hf_card.CardError(answer["error"]) if "error" in answer else (answer["split"], answer["built"])

    def _card_split(self, key: str, relative: str, answer: CardAnswer, where: str = "") -> str | Reject:
        """The split the card's built config gives the image at `relative` as `_card_answer` gave it
        (of the image itself, or of the metadata file naming it: `datasets` loads an ImageFolder's
        rows from there), or the image's reject: `other_hf_config` when no split of the config names it."""
        if isinstance(answer, hf_card.CardError):
            return self._reject(key, "read", BAD_METADATA, f"{shown_name(relative)}: {answer}", where=where)
        split, built = answer
        return split if split is not None else self._reject(key, "read", OTHER_HF_CONFIG,
                                                            self._other_config(relative, built), where=where)

    def _other_config(self, relative: str, built: str | None = None) -> str:
        """Why a data file of the repo is not read: no split of the card's built config (named
        `built`, else asked of the card) names it."""
        named = hf_card.built_name(self.path, self.hf_config, self.follow_links) if built is None else {"built": built}
        if "error" in named:  # the card was changed since the build started
            return f"{shown_name(relative)}: {named['error']}"
        built = named["built"]
        if built == "(none)":
            return f"{shown_name(relative)} is {NO_DEFAULT_SPLIT}: datasets does not load it, not read"
        return (f"{shown_name(relative)} is a data file of no split of config {built} of {hf_card.CARD}, the one "
                "built (datasets does not load it either): not read; set hf_config to build another config")
