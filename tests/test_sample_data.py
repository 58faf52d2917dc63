"""The committed MNIST sample (tests/data/mnist-sample) is what its README says it is."""

import gzip
import hashlib

import numpy as np

from helpers import SAMPLE_MNIST
from multinet.catalog import FILES
from multinet.data import load_dataset

COUNTS = {"train_images": 2048, "train_labels": 2048, "test_images": 512, "test_labels": 512}


def test_the_sample_matches_its_recorded_checksums_and_reads_as_mnist():
    recorded = dict(line.split()[::-1] for line in
                    (SAMPLE_MNIST / "SHA256SUMS.raw").read_text().splitlines())
    for stem in FILES.values():
        raw = gzip.decompress((SAMPLE_MNIST / f"{stem}.gz").read_bytes())
        assert hashlib.sha256(raw).hexdigest() == recorded[stem]
    sample = load_dataset(data_dir=SAMPLE_MNIST, verify=False)
    for role, count in COUNTS.items():
        assert len(getattr(sample, role)) == count
    assert sample.train_images.shape[1:] == (28, 28)
    assert set(np.unique(sample.train_labels)) == set(range(10))


def test_the_sample_is_the_beginning_of_the_full_files(full_mnist):
    sample = load_dataset(data_dir=SAMPLE_MNIST, verify=False)
    for role, count in COUNTS.items():
        np.testing.assert_array_equal(getattr(sample, role), getattr(full_mnist, role)[:count])


def test_the_recipe_in_its_readme_rebuilds_it_byte_for_byte(full_mnist, tmp_path, monkeypatch):
    text = (SAMPLE_MNIST / "README.md").read_text()
    recipe = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(recipe.replace("load_dataset()", "full"), "README recipe", "exec"),
         {"full": full_mnist, "__name__": "recipe"})
    for stem in FILES.values():
        assert (tmp_path / f"{stem}.gz").read_bytes() == (SAMPLE_MNIST / f"{stem}.gz").read_bytes()
