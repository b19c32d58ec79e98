"""Messages of the search capability (commands and events), added to the unions by the package.

The index lives in ``<data_dir>/search/index.sqlite3``; ``data_dir`` travels in every command so
that the engine, which owns the index, never has to guess where the GUI or CLI keeps its data.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from engine.protocol.base import Command, DeviceChoice, Event, Quantization  # noqa: F401

PdfPages = Literal["first", "all"]

# The prompt ensemble used for zero-shot tags when the user gives none ("a photo of a {}" style).
DEFAULT_TAG_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a scan of a {}.",
    "a screenshot of a {}.",
    "{}",
)


class SearchErrorCode:
    """Error codes of search jobs, in addition to ``ErrorCode``."""

    NO_INDEX = "no_index"  # nothing indexed yet (for this model)


# ---------------------------------------------------------------------------------------------
# Value types
# ---------------------------------------------------------------------------------------------


class SearchHit(msgspec.Struct, forbid_unknown_fields=False):
    """One result: an image (or one PDF page) and how similar it is to the query."""

    id: int  # the content id: what GetThumbnails asks for
    path: str
    page: int  # 0-based; 0 for images
    score: float  # cosine similarity (higher is closer)
    width: int
    height: int
    folder: str
    tags: list[str] = msgspec.field(default_factory=list)
    duplicates: list[str] = msgspec.field(default_factory=list)  # same content elsewhere


class SkippedFile(msgspec.Struct, forbid_unknown_fields=False):
    path: str
    reason: str
    folder: str = ""


class IndexedFolder(msgspec.Struct, forbid_unknown_fields=False):
    path: str
    items: int
    last_indexed_at: float | None = None
    pdf_pages: PdfPages = "first"
    # Gone from disk (deleted, or on a drive not mounted now): skipped by "update every folder"
    # and hidden from results; its entries stay until the folder is removed from the index.
    gone: bool = False


class IndexedModel(msgspec.Struct, forbid_unknown_fields=False):
    name: str
    model_type: str
    dimension: int
    vectors: int
    last_used_at: float | None = None
    labels: list[str] = msgspec.field(default_factory=list)  # zero-shot tags computed


class SearchIndexStatus(msgspec.Struct, forbid_unknown_fields=False):
    path: str  # the index file
    folders: list[IndexedFolder]
    models: list[IndexedModel]
    items: int
    skipped: list[SkippedFile]
    skipped_total: int


def decode_hits(result: dict[str, Any] | None) -> list[SearchHit]:
    """The hits in a ``SearchQuery`` job's result."""
    return msgspec.convert((result or {}).get("hits", []), list[SearchHit])


def decode_status(result: dict[str, Any] | None) -> SearchIndexStatus:
    return msgspec.convert((result or {}).get("status", {}), SearchIndexStatus)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


class IndexFolders(Command, tag="index_folders"):
    """Walk folders and embed new or changed images; drop deleted ones. Resumable, cancellable.

    Progress: ``Progress(stage="scanning"|"indexing")`` and ``PartialResult`` with the counts,
    the rate and the ETA after every committed batch. With no folders named, every indexed
    folder is updated except those gone from disk, which the result lists under ``gone``
    (``[{"path", "items"}]``) for the user to reconnect or remove.
    """

    job_id: str
    data_dir: str
    model: str
    folders: list[str] = msgspec.field(default_factory=list)  # empty: every indexed folder
    pdf_pages: PdfPages = "first"
    quant: Quantization = "none"
    device: DeviceChoice = "auto"
    workers: int = 0  # decode processes; 0 = one per CPU core
    batch_size: int = 32
    allow_pickle: bool = False
    trust_remote_code: bool = False


class SearchQuery(Command, tag="search_query"):
    """Text → images, image → similar images, or both (the image, moved by the text)."""

    job_id: str
    data_dir: str
    text: str = ""
    image: str | None = None  # absolute path of a query image
    model: str | None = None  # None: the model the index was last built or searched with
    top_k: int = 20
    text_weight: float = 0.5  # image and text together: the text's share of the query
    tags: list[str] = msgspec.field(default_factory=list)  # only images carrying every tag
    folders: list[str] = msgspec.field(default_factory=list)  # only images under these
    exact: bool | None = None  # None: exact below the ANN threshold, approximate above
    quant: Quantization = "none"
    device: DeviceChoice = "auto"


class SearchStatus(Command, tag="search_status"):
    job_id: str
    data_dir: str
    skipped_limit: int = 500


class TagImages(Command, tag="tag_images"):
    """Zero-shot tags: score every indexed image against labels with the model's logit scale.

    The labels replace the model's earlier ones (a softmax is only meaningful over one set);
    images indexed later are scored against them at the end of their index run.
    """

    job_id: str
    data_dir: str
    labels: list[str]
    model: str | None = None
    templates: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_TAG_TEMPLATES))
    # A probability: softmax over the labels for CLIP-style models, a sigmoid per label for
    # SigLIP. None: 0.5 for softmax, 0.1 for sigmoid (SigLIP's probabilities run low).
    threshold: float | None = None
    quant: Quantization = "none"
    device: DeviceChoice = "auto"


class GetThumbnails(Command, tag="get_thumbnails"):
    """Stored JPEG thumbnails (base64) of hits, by content id, for a lazily filled grid."""

    job_id: str
    data_dir: str
    ids: list[int]


class RemoveFolders(Command, tag="remove_folders"):
    """Forget folders: their entries, and vectors no other folder uses. Files are untouched."""

    job_id: str
    data_dir: str
    folders: list[str]
