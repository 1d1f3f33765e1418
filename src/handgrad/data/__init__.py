"""Data: the IDX reader, datasets by name (mnist, fashion-mnist, digits), downloads into a cache,
stratified splits, normalisation and a seeded DataLoader. NumPy and the standard library only;
scikit-learn (digits) and tqdm (download progress) are imported when needed."""

from .datasets import (
    CLASSES,
    DATASETS,
    ENV_VAR,
    FILES,
    Dataset,
    DatasetRow,
    cache_dir,
    describe_datasets,
    load_dataset,
    load_digits,
)
from .download import MD5, MIRRORS, DownloadError, download_file, md5_file
from .idx import IMAGES_MAGIC, LABELS_MAGIC, load_idx_pair, read_idx, write_idx
from .loader import DataLoader
from .normalize import Normalizer
from .split import stratified_subset, train_val_split

__all__ = [
    "CLASSES",
    "DATASETS",
    "ENV_VAR",
    "FILES",
    "Dataset",
    "DatasetRow",
    "cache_dir",
    "describe_datasets",
    "load_dataset",
    "load_digits",
    "MD5",
    "MIRRORS",
    "DownloadError",
    "download_file",
    "md5_file",
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "load_idx_pair",
    "read_idx",
    "write_idx",
    "DataLoader",
    "Normalizer",
    "stratified_subset",
    "train_val_split",
]
