"""Find a dataset split on disk (offline mirror) or on the Hugging Face hub.

The mirror is a folder of read-only Parquet files (``<data dir>/<dataset folder>/
<split>.parquet``, see ``shared/data/README.md``). Nothing in this module writes to it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from fedhyper.config import DatasetSpec
from fedhyper.errors import DatasetUnavailableError

if TYPE_CHECKING:
    import datasets

ENV_DATA_DIR = "FEDHYPER_DATA_DIR"

logger = logging.getLogger(__name__)


def _explicit_data_dirs(configured: str | None) -> list[Path]:
    """Directories the user named: the config value, then ``$FEDHYPER_DATA_DIR``."""
    named = [configured, os.environ.get(ENV_DATA_DIR)]
    return [Path(value).expanduser() for value in named if value]


def _default_data_dirs() -> list[Path]:
    """``../shared/data`` from the working directory, then from the repository root."""
    # fedhyper/data/source.py -> parents[2] is the repository root.
    repo_root = Path(__file__).resolve().parents[2]
    return [Path.cwd().parent / "shared" / "data", repo_root.parent / "shared" / "data"]


def resolve_data_dir(configured: str | None) -> Path | None:
    """Return the first existing data directory.

    Parameters
    ----------
    configured : str or None
        Explicit ``dataset.data_dir`` from the config; empty means unset.

    Returns
    -------
    Path or None
        The first existing directory among: ``configured``, ``$FEDHYPER_DATA_DIR``,
        ``../shared/data`` from the working directory, ``../shared/data`` from the
        repository root; ``None`` if none exists.

    """
    for candidate in _explicit_data_dirs(configured):
        if candidate.is_dir():
            return candidate
        # A user-named directory that is missing is almost always a typo: say so
        # rather than fall back to a default mirror in silence.
        logger.warning("data directory %s does not exist; trying the next one", candidate)
    return next((path for path in _default_data_dirs() if path.is_dir()), None)


def dataset_folder(spec: DatasetSpec, root: Path) -> Path:
    """Return the dataset's folder: ``spec.folder`` (or its name) under ``root``."""
    # Joining an absolute folder to root yields the folder alone.
    return root / Path(spec.folder or spec.name).expanduser()


def mirror_file(spec: DatasetSpec, split: str, data_dir: str | None) -> Path | None:
    """Return the mirror's Parquet file for ``split``, or ``None`` if it is absent."""
    folder = Path(spec.folder).expanduser()
    root = resolve_data_dir(data_dir)
    if root is not None:
        folder = dataset_folder(spec, root)
    elif not folder.is_absolute():
        return None  # a folder relative to a data directory, and there is none
    path = folder / f"{split}.parquet"
    return path if path.is_file() else None


def content_fingerprint(path: Path) -> str:
    """Identify a file's content cheaply.

    Uses the sha256 recorded in the sibling ``manifest.json`` when the file is listed
    there (hashing 30 MB on every start would cost more than loading the cache);
    otherwise falls back to size and modification time.
    """
    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        entries = json.loads(manifest.read_text(encoding="utf-8")).get("files", [])
        for entry in entries:
            # Manifest paths are relative to the mirror's build tree; match the name.
            if Path(entry.get("file", "")).name == path.name and "sha256" in entry:
                return f"sha256:{entry['sha256']}"
    stat = path.stat()
    return f"stat:{stat.st_size}:{stat.st_mtime_ns}"


def load_split(spec: DatasetSpec, split: str, data_dir: str | None) -> datasets.Dataset:
    """Load one split of a dataset as a Hugging Face ``Dataset``.

    Parameters
    ----------
    spec : DatasetSpec
        The dataset.
    split : str
        Split name, e.g. ``"train"`` or ``"test"``.
    data_dir : str or None
        Explicit data directory; see :func:`resolve_data_dir` for the fallbacks.

    Returns
    -------
    datasets.Dataset
        The split with the mirror's column names.

    Raises
    ------
    DatasetUnavailableError
        If neither the mirror nor the hub provides the split.

    """
    # Imported here: a node that finds its split in the tensor cache never needs it.
    import datasets

    path = mirror_file(spec, split, data_dir)
    if path is not None:
        return _as_dataset(datasets.load_dataset("parquet", data_files=str(path), split="train"))

    if not spec.hub_name:
        hub_problem = "dataset.hub_name is empty"
    elif split not in spec.hub_splits:
        hub_problem = f"it has no {split!r} split, only {', '.join(spec.hub_splits)}"
    else:
        try:
            dataset = _as_dataset(datasets.load_dataset(spec.hub_name, split=split))
        # The hub raises many unrelated types (offline mode, HTTP, missing repo, auth);
        # all mean the same thing here and are reported together with the mirror miss.
        except Exception as exc:
            hub_problem = " ".join(f"{type(exc).__name__}: {exc}".split())
        else:
            if spec.hub_label_column:
                dataset = dataset.rename_column(spec.hub_label_column, spec.label_column)
            return dataset

    directories = [*_explicit_data_dirs(data_dir), *_default_data_dirs()]
    # An absolute folder is the same under every directory: name it once.
    folders = dict.fromkeys(str(dataset_folder(spec, directory)) for directory in directories)
    tried = ", ".join(f"{folder}/{split}.parquet" for folder in folders)
    raise DatasetUnavailableError(
        f"dataset {spec.name!r} split {split!r} is unavailable: no mirror file (tried {tried}) "
        f"and the hub dataset {spec.hub_name!r} is unusable ({hub_problem}). Fix: set "
        f"{ENV_DATA_DIR} or dataset.data_dir to the folder that holds "
        f"'{spec.folder or spec.name}/', or allow access to the Hugging Face hub."
    )


def _as_dataset(loaded: object) -> datasets.Dataset:
    """Narrow ``load_dataset``'s union return type; with ``split=`` it is a Dataset."""
    import datasets

    if not isinstance(loaded, datasets.Dataset):
        raise TypeError(f"expected a datasets.Dataset, got {type(loaded).__name__}")
    return loaded
