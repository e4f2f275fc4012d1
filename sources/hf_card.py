"""A Hugging Face dataset card's `configs:`: which data files are a config's, and in which split.

A Hub repo's `README.md` may start with YAML front matter (`---` lines around it, as huggingface_hub's
`DatasetCard` finds it: `front_matter`) whose `configs:`
names its data files: `- config_name: default` with `data_files:` a pattern, a list of them (all
`train`), or a list of `{split, path}` (path a pattern or a list), optionally `data_dir:` (the
patterns' folder; without `data_files`, the files under it take their split from their names).
When the card has configs, `datasets` (5.2, `load.py` `create_builder_configs_from_metadata_configs`,
`data_files.py` `sanitize_patterns`/`resolve_pattern`, `utils/metadata.py`) takes the splits from
there, never from file names, and a file the loaded config does not name is not loaded: so here.
The config built is `hf_config`, else the card's default (its only one, the one named `default`,
or the one with `default: true`, as `get_default_config_name`). Patterns are fsspec globs taken
from the root (`*` within a name, `**` across folders). The card is a user file: it is judged by
its size before it is read, its YAML parsed by a safe loader (an alias is a reference, never a
copy) and only the `configs` shapes above are walked; anything else is a `CardError` (stops the
build before it starts, naming the card, as `datasets` refuses the card too).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple

from sources import fsio
from sources.hf_parquet import SPLIT_NAME, hf_split, holds_class_label, loaded_split, pattern_set, split_hint
from sources.paths import path_problem, relative_to_root
from sources.records import read_input_bytes
from transforms.errors import exception_detail

_log = logging.getLogger(__name__)

CARD = "README.md"
MAX_CARD_BYTES = 1 << 20  # real cards with hundreds of configs and their features: a few hundred KiB
MAX_PATTERNS = 4096  # of one config: a card listing each file of a big repo stays within it
_GLOB_CHARS = re.compile(r"[*?\[]")
# huggingface_hub's `repocard.REGEX_YAML_BLOCK` (the rule `DatasetCard` reads a card by), written out
_FRONT_MATTER = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")


class CardError(ValueError):
    """A dataset card whose `configs` cannot be taken as `datasets` takes them, or a `hf_config`
    the card does not have."""

    field = "hf_config"  # the source's field that the message names


class CardOutsideRoot(CardError):
    """A dataset card that links out of the root, never read without `follow_links`."""

    field = "follow_links"


@dataclass(frozen=True)
class Config:
    """One config of a card: (split, patterns taken from the root) pairs, or, with `data_dir` and no
    `data_files`, the folder whose files take their split from their names."""

    name: str
    splits: tuple[tuple[str, tuple[str, ...]], ...] = ()
    data_dir: str | None = None
    default: bool = False


class CardParse(NamedTuple):
    """What a card's front matter is read for, kept of its parse: its `configs` (`configs_in`) and
    each `dataset_info` entry's `features` list by the config it is of (the last entry of a name,
    as `read_card_labels` takes it). The rest of the parse (prose-like YAML a card may carry: a
    1 MiB card of small mappings parses to 12 MiB) is dropped, never held by the cache."""

    configs: tuple[Config, ...] | str
    features: dict[str, list]


@fsio.cached_input(maxsize=2)
def card_yaml(uri: str) -> CardParse | None:
    """What the card at `uri`'s YAML front matter (parsed by a safe loader) says of its configs and
    their features (`CardParse`; None without the card or front matter), or why it cannot be read
    (a `CardText`). Parsed once per card per process for its configs and each config's labels (a
    500 KB card of 1,100 configs takes 0.3 s to parse); two cards kept at most (each within
    `MAX_CARD_BYTES`). Its size is judged on the opened file (`fsio.read_bytes`): the cache's state
    of it is the only stat."""
    import yaml

    try:
        text = read_input_bytes(uri, MAX_CARD_BYTES).decode("utf-8-sig")
    except FileNotFoundError:
        return None
    except fsio.FileTooLarge:
        return CardText(f"over the {MAX_CARD_BYTES} byte budget of a dataset card: not read")
    except UnicodeDecodeError as exc:
        return CardText(f"not UTF-8 text (byte {exc.start})")
    except OSError as exc:  # no permission, a failing disk (too many open files: the machine's error, raised)
        return CardText(f"unreadable ({exception_detail(exc)})")
    front = front_matter(text)
    try:
        card = None if front is None else yaml.load(front, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        return CardText(f"its YAML front matter does not parse ({str(exc).splitlines()[0][:120]})")
    except RecursionError:
        return CardText("its YAML front matter nests past Python's recursion limit")
    return None if front is None else CardParse(configs_in(card), _features_by_config(card))


def _features_by_config(card: Any) -> dict[str, list]:
    """Each `dataset_info` entry's `features` list by its config (`_entry_name`), the last of a name
    (one entry without `config_name` is `default`'s, as `datasets`' `DatasetInfosDict` reads it)."""
    infos = card.get("dataset_info") if isinstance(card, dict) else None
    infos = [infos] if isinstance(infos, dict) else infos if isinstance(infos, list) else []
    return {_entry_name(info): info["features"] for info in infos
            if isinstance(info, dict) and isinstance(info.get("features"), list)}


class CardText(str):
    """Why a card's front matter cannot be read (`card_yaml`)."""


@fsio.cached_input(maxsize=4)
def read_card(uri: str) -> tuple[Config, ...] | str:
    """The configs of the card at `uri` (empty without the card, front matter or `configs`), or
    why they cannot be read (a string: returned, not raised, so that the parse is kept)."""
    card = card_yaml(uri)
    return str(card) if isinstance(card, CardText) else card.configs if card is not None else ()


def front_matter(text: str) -> str | None:
    """The YAML of a card's front matter as `datasets` 5.2 reads it (huggingface_hub's `DatasetCard`,
    `repocard.REGEX_YAML_BLOCK`, `_FRONT_MATTER`): a `---` line after any leading whitespace (blank
    lines), up to the next line of `---` followed by spaces or tabs only; None without one."""
    found = _FRONT_MATTER.search(text)
    return found.group(2) if found else None


def configs_in(card: Any) -> tuple[Config, ...] | str:
    """The `configs` of a card's parsed front matter, or why they cannot be read."""
    listed = card.get("configs") if isinstance(card, dict) else None
    if not listed:
        return ()
    if not isinstance(listed, list):
        return f"configs is a {type(listed).__name__}, not a list"
    configs = []
    for entry in listed:
        config = _config(entry)
        if isinstance(config, str):
            return config
        configs.append(config)
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        return f"a config_name is given twice ({', '.join(names)[:120]})"
    return tuple(configs)


def _config(entry: Any) -> Config | str:
    """One entry of `configs`, or what is wrong with it."""
    if not isinstance(entry, dict) or not isinstance(entry.get("config_name"), str):
        return f"a config without a config_name ({_shown(entry)})"
    name, data_dir = entry["config_name"], entry.get("data_dir")
    if data_dir is not None and (not isinstance(data_dir, str) or posixpath.isabs(data_dir)):
        return f"config {name!r}: data_dir {_shown(data_dir)} is not a folder of the repo"
    files = entry.get("data_files")
    splits = _splits(files) if files is not None else ()
    if isinstance(splits, str):
        return f"config {name!r}: {splits}"
    if sum(len(p) for _, p in splits) > MAX_PATTERNS:
        return f"config {name!r}: over {MAX_PATTERNS} data_files patterns"
    base = posixpath.normpath(data_dir) if data_dir else ""
    joined = tuple((split, tuple(posixpath.normpath(posixpath.join(base, p)) for p in patterns))
                   for split, patterns in splits)
    return Config(name, joined, data_dir if files is None else None, entry.get("default") is True)


def _splits(files: Any) -> tuple[tuple[str, tuple[str, ...]], ...] | str:
    """`data_files` as (split, patterns) pairs (datasets' `sanitize_patterns`), or what is wrong."""
    if isinstance(files, str):
        return (("train", (files,)),)
    if not isinstance(files, list):
        return f"data_files is a {type(files).__name__}, not a pattern or a list"
    if all(isinstance(f, str) for f in files):
        return (("train", tuple(files)),)
    pairs = []
    for item in files:
        paths = item.get("path") if isinstance(item, dict) and len(item) == 2 else None
        paths = [paths] if isinstance(paths, str) else paths
        if not (isinstance(paths, list) and all(isinstance(p, str) for p in paths) and isinstance(item.get("split"), str)):
            return f"a data_files entry is not {{split, path}} ({_shown(item)})"
        if not SPLIT_NAME.fullmatch(item["split"]):
            return (f"split {_shown(item['split'])} is no split name datasets takes (letters, digits and _, "
                    "parts joined by dots: test_2017, test.v2)")
        pairs.append((item["split"], tuple(paths)))
    if len({s for s, _ in pairs}) != len(pairs):
        return "a split is named twice in data_files"
    return tuple(pairs)


def _shown(value: Any) -> str:
    """A YAML value in a message: a text or a number as written, anything else by its type alone
    (printing a list or mapping of an alias bomb would walk every copy it stands for)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return repr(value)[:80]
    return f"a {type(value).__name__}"


def chosen(configs: tuple[Config, ...], hf_config: str | None) -> Config:
    """The config to build: `hf_config`, else the card's default, as `datasets` picks it."""
    names = ", ".join(c.name for c in configs)[:200]
    if hf_config is not None:
        found = next((c for c in configs if c.name == hf_config), None)
        if found is None:
            raise CardError(f"{CARD} has no config {hf_config!r} (its configs: {names}): set hf_config to one of them")
        return found
    defaults = [c for c in configs if len(configs) == 1 or c.name == "default" or c.default]
    if len(defaults) != 1:
        what = "several default configs" if defaults else "several configs and none is the default"
        raise CardError(f"{CARD} has {what} ({names}): set hf_config to the one to build")
    return defaults[0]


def card_config(root: str, hf_config: str | None, follow_links: bool = False) -> Config | None:
    """The config of the card at the root to build (None: no card, or one without configs). A card
    that links out of the root without `follow_links` (a Hub cache snapshot's to its blob is the
    cache's own, inside) is never opened: text from elsewhere would steer the splits."""
    card = fsio.join(root, CARD)
    problem = path_problem(root, card, follow_links)
    if problem:
        raise CardOutsideRoot(f"{CARD} cannot be read: {problem.detail}, or copy the card into the root (its configs "
                        "give the splits)")
    configs = read_card(card)
    if isinstance(configs, str):
        raise CardError(f"{CARD}: {configs}; fix its configs (datasets refuses it too) or remove the card")
    if not configs:
        if hf_config is not None:
            folder = fsio.join(root, hf_config)
            hint = (f" (datasets takes no folder for a config: load_dataset merges {hf_config}/ with the folders "
                    f"beside it into its splits; to build it alone, set path to {folder}, as datasets' data_dir)"
                    if "/" not in hf_config and fsio.isdir(folder) else "")
            raise CardError(f"hf_config is {hf_config!r} but there is no {CARD} with configs at the root: "
                            f"remove hf_config{hint}")
        return None
    return chosen(configs, hf_config)


def config_splits(config: Config, relative: str) -> list[str]:
    """The splits of `config` (one with `data_files`: without, `_default_splits` judges) whose
    patterns name the file at `relative` (under the root, `/` between folders)."""
    return [split for split, patterns in config.splits if any(_matches(p, relative) for p in patterns)]


def _matches(pattern: str, relative: str) -> bool:
    """Whether an fsspec glob (as `datasets` resolves it) names the file at `relative`."""
    if not _GLOB_CHARS.search(pattern):
        return pattern == relative
    return _compiled(pattern).match(relative) is not None


@functools.lru_cache(maxsize=4 * MAX_PATTERNS)
def _compiled(pattern: str) -> re.Pattern:
    from fsspec.utils import glob_translate

    return re.compile(glob_translate(pattern))


@fsio.derived_input
def built_name(root: str, hf_config: str | None, follow_links: bool = False) -> dict[str, str]:
    """{"built": the built config's name as a reject shows it, `'default'` (`(none)` without
    configs)}, or {"error": the card's error}. Recorded for the unit, not the card: an edit of the
    card's prose leaves it, and the unit, as they were."""
    try:
        config = card_config(root, hf_config, follow_links)
    except CardError as exc:
        return {"error": str(exc)}
    return {"built": _shown_name(config)}


def _shown_name(config: Config | None) -> str:
    """The config's name as a reject shows it (`(none)` without configs): one spelling for
    `built_name` and `card_answer`, whose records a reject reads alike."""
    return repr(config.name) if config else "(none)"


@fsio.derived_input
def file_split(root: str, relative: str, hf_config: str | None, follow_links: bool = False) -> str | None:
    """The split `datasets` gives the parquet file at `relative` (under `root`, `/` between folders):
    the card's built config's (of two naming it, the held-out one: never trained on), without a
    card's `data_files` the one the default patterns of the repo (or of the config's `data_dir`)
    give it (`hf_parquet.loaded_split`); None for a file `datasets` does not load (of no split of
    the built config, or named by no pattern of the set the repo loads by). Recorded for the unit
    reading the file: a card edited moves it."""
    return file_splits(root, [relative], hf_config, follow_links)[0]


@fsio.derived_input
def card_answer(root: str, relative: str, hf_config: str | None, follow_links: bool = False) -> dict[str, Any]:
    """The split the card's built config gives an image folder's file at `relative` (`splits_in`)
    and `built_name`'s name, the card asked once (each asking stats it: a request on a remote
    filesystem): {"split": ..., "built": ...}, or {"error": the card's error}. Recorded for the
    unit reading an image of a folder with a card."""
    try:
        config = card_config(root, hf_config, follow_links)
    except CardError as exc:
        return {"error": str(exc)}
    split = (splits_in(config, [relative])[0] if config is None or config.splits
             else _default_splits(root, config, [relative], folder_patterns)[0])
    return {"split": split, "built": _shown_name(config)}


def file_splits(root: str, relatives: list[str], hf_config: str | None,
                follow_links: bool = False) -> list[str | None]:
    """`file_split` of each of `relatives` (parquet files), the card read and the repo (or the
    config's `data_dir`) listed once for them all. Without `data_files`, the files `datasets` loads
    are those of the first default pattern set naming any parquet file there (`default_patterns`)."""
    config = card_config(root, hf_config, follow_links)
    if config is not None and config.splits:
        return splits_in(config, relatives)
    return _default_splits(root, config, relatives, default_patterns)


def _default_splits(root: str, config: Config | None, relatives: list[str],
                    patterns_of: Callable[[str], str]) -> list[str | None]:
    """The split each of `relatives` is loaded in without `data_files`: by the pattern set
    `patterns_of` judges for the config's `data_dir` (the root without one); None outside it."""
    under = posixpath.normpath(config.data_dir) + "/" if config is not None and config.data_dir else ""
    patterns = patterns_of(fsio.join(root, under.rstrip("/")) if under else root)
    return [loaded_split(r[len(under):], patterns) if r.startswith(under) else None for r in relatives]


def splits_in(config: Config | None, relatives: list[str]) -> list[str | None]:
    """The split `config` (`card_config`'s, one with `data_files`) gives each of `relatives`: of two
    naming it, the held-out one (never trained on); without a config, the one the file's own path
    gives (`hf_parquet.hf_split`). A config with `data_dir` alone goes to `_default_splits`."""
    if config is None:
        return [hf_split(relative) for relative in relatives]
    found = []
    for relative in relatives:
        named = config_splits(config, relative)
        found.append(next((s for s in named if split_hint(s)), named[0]) if named else None)
    return found


def default_patterns(root: str) -> str:
    """The pattern set `datasets` loads the repo at `root` by without a card's `data_files`
    (`hf_parquet.pattern_set`), judged by its parquet files: the data files this source reads
    (an image a row's path names is the row's; `datasets` would judge by every file). Judged once
    per run (`fsio.once_per_run`): each unit's `file_split`, read and checked at a rerun, asks it."""
    return fsio.once_per_run(("sources.hf_card.default_patterns", root), lambda: _judged_patterns(root, (".parquet",)))


def folder_patterns(root: str) -> str:
    """The pattern set `datasets` loads an image folder at `root` (a card config's `data_dir`, or the
    repo, without `data_files`) by, judged as there by every file under it: `imgs/other/c.png`
    beside `imgs/train/` is loaded by no split. Once per run, as `default_patterns`."""
    return fsio.once_per_run(("sources.hf_card.folder_patterns", root), lambda: _judged_patterns(root, None))


def _judged_patterns(root: str, suffixes: tuple[str, ...] | None) -> str:
    if not fsio.isdir(root):  # a config's data_dir that is not there: none of its files is
        return "all"
    return pattern_set([relative_to_root(root, f) for f in fsio.list_files(root, suffixes, recursive=True)])


@fsio.derived_input
def card_class_labels(root: str, hf_config: str | None, follow_links: bool = False) -> dict[str, dict] | None:
    """The features (`datasets`' JSON form, as `hf_parquet.class_names` gives them) of the columns
    holding a `ClassLabel` that the card's `dataset_info` declares for the built config (`default`
    without configs): `datasets` casts each parquet to these (5.2: the card's features win over a
    parquet's own `huggingface` metadata), naming the labels. None where the card declares no
    features for the config (no card, no `dataset_info`, one that cannot be read: its configs' error
    stops the build elsewhere): each parquet's own then. Recorded for the unit: an edit of the names
    renders it again."""
    try:
        config = card_config(root, hf_config, follow_links)
    except CardError:
        return None
    return read_card_labels(fsio.join(root, CARD), config.name if config else "default")


@fsio.cached_input(maxsize=4)
def read_card_labels(uri: str, config_name: str) -> dict[str, dict] | None:
    """`card_class_labels` of the `dataset_info` entry for `config_name` in the card at `uri` (one
    entry without `config_name` is `default`'s, as `datasets`' `DatasetInfosDict` reads it); None
    when there is none or it cannot be read (judged by its size first, as `read_card`). Only that
    entry is walked, within its own node budget: a card of a thousand honest configs passed one
    budget shared by all, and none of them was named."""
    card = card_yaml(uri)  # the machine's errors raised; a card that cannot be read: a CardText
    features = card.features.get(config_name) if isinstance(card, CardParse) else None
    if features is None:
        return None
    try:
        return {column: feature for column, feature in _yaml_fields(features, _FeatureWalk(MAX_CARD_FEATURE_NODES)).items()
                if holds_class_label(feature)}
    except (_TooManyNodes, RecursionError) as exc:  # aliases fanning out, or nested past the stack
        _log.warning("%s: dataset_info features of %s not read (%s): no class labels from the card", uri, config_name,
                     exc if isinstance(exc, _TooManyNodes) else "nested past Python's recursion limit")
        return None


def _entry_name(info: dict) -> str:
    """The config a `dataset_info` entry is of: its `config_name`, `default` without one."""
    name = info.get("config_name", "default")
    return name if isinstance(name, str) else "default"


MAX_CARD_FEATURE_NODES = 10_000  # YAML nodes walked in a card's features; real cards have tens


class _TooManyNodes(Exception):
    """The card's features are past `MAX_CARD_FEATURE_NODES`: YAML aliases fanning out (a 2 KB card
    can stand for 10**8 nodes, each walked and recorded)."""


class _FeatureWalk:
    """What one walk over a card's features spends: nodes within a budget (aliases are shared
    objects: each use counts), and the containers open on the current path (an alias naming its
    own ancestor is a cycle: `None`, never a recursion without end)."""

    def __init__(self, budget: int):
        self.left = budget
        self.open: set[int] = set()

    @contextlib.contextmanager
    def enter(self, node: Any) -> Iterator[bool]:
        """Counts `node`; yields whether it may be walked (False: it is its own ancestor)."""
        self.left -= 1
        if self.left < 0:
            raise _TooManyNodes(f"over {MAX_CARD_FEATURE_NODES} nodes")
        if id(node) in self.open:
            yield False
            return
        self.open.add(id(node))
        try:
            yield True
        finally:
            self.open.discard(id(node))


def _yaml_fields(entries: Any, walk: _FeatureWalk) -> dict[str, Any]:
    """A card's YAML feature list (`- name: label` with `dtype`, `list`, `sequence`, `struct`) as
    `datasets`' JSON features (5.2 `Features._from_yaml_list`), the shapes that can hold a
    `ClassLabel` kept; a malformed entry is `None` (no labels), never an error."""
    if not isinstance(entries, list):
        return {}
    with walk.enter(entries) as fresh:
        if not fresh:
            return {}
        return {e["name"]: _yaml_feature(e, walk) for e in entries
                if isinstance(e, dict) and isinstance(e.get("name"), str)}


def _yaml_feature(obj: Any, walk: _FeatureWalk) -> Any:
    if not isinstance(obj, dict) or not obj:
        return None
    with walk.enter(obj) as fresh:
        return _yaml_kind(obj, walk) if fresh else None


def _yaml_kind(obj: dict, walk: _FeatureWalk) -> Any:
    kind = next(iter(obj)) if "name" not in obj else next((k for k in obj if k != "name"), None)
    inner = obj.get(kind)
    if kind in ("large_list", "list", "sequence"):
        if isinstance(inner, list):  # a list of fields: `sequence` of a dict is a dict of lists there
            fields = _yaml_fields(inner, walk)
            return ({name: {"_type": "List", "feature": sub} for name, sub in fields.items()} if kind == "sequence"
                    else {"_type": "List", "feature": fields})
        return {"_type": "List", "feature": _yaml_feature(inner, walk) if isinstance(inner, dict) else None}
    if kind == "struct":
        return _yaml_fields(inner, walk)
    if kind == "dtype":
        return _yaml_feature(inner, walk) if isinstance(inner, dict) else None
    if kind == "class_label":
        names = inner.get("names") if isinstance(inner, dict) else None
        if isinstance(names, list):
            return {"_type": "ClassLabel", "names": [str(n) for n in names]}
        try:
            ids = sorted(names, key=int) if isinstance(names, dict) else None
        except (TypeError, ValueError):
            return None
        if not ids or [int(i) for i in ids] != list(range(len(ids))):  # datasets refuses a gap
            return None
        return {"_type": "ClassLabel", "names": [str(names[i]) for i in ids]}
    return None
