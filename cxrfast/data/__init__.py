"""Data: studies from the layouts users have, the batch the models take, and radiographs prepared into
memory-mappable shards.

    cxrfast prepare SRC OUT --size 512                  # the command
    from cxrfast.data.prepare import prepare            # the same from Python: prepare(SRC, OUT, size=512)
    ds = cxrfast.data.ShardedImages("OUT")              # len(ds); image, row = ds[i]
    studies = cxrfast.data.open_dataset("mimic-cxr", ROOT)   # a StudyDataset of Study records
    cxrfast.data.list_datasets()                             # mimic-cxr, openi, chexpert, nih14, ...

Names are resolved on first use, so importing this package imports neither the readers nor the DICOM
decoder. See cxrfast/data/shards.py for the format and cxrfast/data/prepare.py for the command.
"""

_LAZY = {
    "Batch": ("cxrfast.data.batch", "Batch"),
    "Study": ("cxrfast.data.studies", "Study"),
    "ImageRef": ("cxrfast.data.studies", "ImageRef"),
    "StudyDataset": ("cxrfast.data.studies", "StudyDataset"),
    "Problem": ("cxrfast.data.studies", "Problem"),
    "ShardedImages": ("cxrfast.data.shards", "ShardedImages"),
    "ShardFormatError": ("cxrfast.data.shards", "ShardFormatError"),
    "PrepareError": ("cxrfast.data.prepare", "PrepareError"),
    "find_sources": ("cxrfast.data.prepare", "find_sources"),
    "open_dataset": ("cxrfast.data.datasets", "open_dataset"),
    "list_datasets": ("cxrfast.data.datasets", "list_datasets"),
    "DatasetError": ("cxrfast.data.datasets", "DatasetError"),
}
_SUBMODULES = {"batch", "dali", "datasets", "loader", "prepare", "reports", "shards", "studies", "synth", "text",
               "transforms"}

from cxrfast._lazy import lazy_exports  # noqa: E402

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY, _SUBMODULES)
