"""The helpers every dataset recipe shares: splits, source fingerprints, worker pools, recipes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from moldiff.data import registry
from moldiff.data.qm9 import split_assignment
from moldiff.data.recipe import DatasetRecipe
from moldiff.data.source import source_fingerprint, source_stale
from moldiff.data.splits import assign_splits, split_by_group
from moldiff.utils.io import file_sha256
from moldiff.utils.parallel import worker_map


def test_assign_splits_sizes_halves_and_seed():
    split, half = assign_splits(10, 6, 3, seed=4)
    assert np.bincount(split, minlength=3).tolist() == [6, 3, 1]
    assert sorted(half[split == 0].tolist()) == [0, 0, 0, 1, 1, 1] and set(half[split != 0].tolist()) == {-1}
    again, _ = assign_splits(10, 6, 3, seed=4)
    np.testing.assert_array_equal(split, again)
    with pytest.raises(ValueError, match="cannot split 3 items"):
        assign_splits(3, 3, 1)


def test_qm9_and_group_splits_share_the_rule():
    groups = [f"g{i:03d}" for i in range(200)]  # sorted order == item order
    split_g, half_g = split_by_group(groups, [153 / 200, 27 / 200, 20 / 200], seed=0)
    split_q, half_q = split_assignment(200)
    np.testing.assert_array_equal(split_g, split_q)
    np.testing.assert_array_equal(half_g, half_q)


def test_file_sha256(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(os.urandom(3000))
    assert file_sha256(f, chunk=1024) == hashlib.sha256(f.read_bytes()).hexdigest()


def test_source_stale_rules(tmp_path):
    f = tmp_path / "mols.sdf"
    f.write_text("abc\n")
    meta = {"report": {"source": source_fingerprint({"seed": 0, "fr": (0.5, 0.5)}, f)}}
    assert source_stale(meta, {"seed": 0, "fr": [0.5, 0.5]}, f) is None
    assert "options changed" in source_stale(meta, {"seed": 1, "fr": [0.5, 0.5]}, f)
    st = os.stat(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert source_stale(meta, {"seed": 0, "fr": [0.5, 0.5]}, f) is None  # touched, same content
    f.write_text("abd\n")  # same size, other content
    assert "content hash differs" in source_stale(meta, {"seed": 0, "fr": [0.5, 0.5]}, f)
    f.write_text("abcd\n")
    assert "size" in source_stale(meta, {"seed": 0, "fr": [0.5, 0.5]}, f)
    g = tmp_path / "other.sdf"
    g.write_text("abc\n")
    assert "built from" in source_stale(meta, {"seed": 0, "fr": [0.5, 0.5]}, g)
    assert source_stale(meta, {"seed": 0, "fr": [0.5, 0.5]}, tmp_path / "gone.sdf") is None  # copied cache
    assert source_stale({"report": {}}, {}) == "the cache does not record its source"
    assert source_stale({"report": {"source": source_fingerprint({"limit": 3})}}, {"limit": 3}) is None


def _square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_map_keeps_order_and_stops_early(workers):
    with worker_map(_square, iter(range(50)), workers, chunksize=3) as results:
        assert list(results) == [x * x for x in range(50)]
    with worker_map(_square, iter(range(10**6)), workers) as results:
        first = [r for _, r in zip(range(5), results)]
    assert first == [0, 1, 4, 9, 16]


def test_every_dataset_is_a_recipe_and_names_bad_options(tmp_path):
    for name in ("qm9", "geom", "sdf", "nci"):
        recipe = registry.get_recipe(name)
        assert isinstance(recipe, DatasetRecipe) and recipe.name == name and isinstance(recipe.version, int)
        path = {"path": "x.sdf"} if recipe.requires_path else {}
        with pytest.raises(ValueError, match=rf"dataset '{name}' has no option\(s\) \['colour'\]; its options: "):
            registry.prepare_dataset(name, root=str(tmp_path), colour=1, **path)
    assert registry.cache_name("qm9", limit=5) == "qm9_first5"
    assert registry.cache_name("geom", n_conformers=1, path="x") == "geom_c1"
    assert registry.cache_name("nci", limit=4) == "nci_first4"
    assert registry.cache_name("sdf", path="/a/b/my mols.sdf.gz", heavy_atoms_only=True) == "sdf_my_mols_noH"
    with pytest.raises(ValueError, match="needs a path"):
        registry.cache_name("geom")


def test_recipes_and_staleness_checks_do_not_import_rdkit(tmp_path, conformer_sdf):
    code = (
        "import sys\n"
        "from moldiff.data import registry\n"
        "for name in ('qm9', 'geom', 'sdf', 'nci'):\n"
        "    registry.get_recipe(name)\n"
        f"registry.get_recipe('sdf').stale({{'report': {{}}}}, {{'path': {str(conformer_sdf)!r}}})\n"
        "bad = [m for m in sys.modules if m == 'rdkit' or m.startswith('rdkit.')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_write_json_is_atomic_and_ends_with_a_newline(tmp_path):
    import json

    from moldiff.utils.io import write_json

    out = tmp_path / "sub" / "r.json"
    write_json(out, {"a": [1, 2]})
    assert out.read_text().endswith("}\n") and json.loads(out.read_text()) == {"a": [1, 2]}
    with pytest.raises(TypeError):
        write_json(out, {"a": object()})  # not serialisable: the earlier file stays whole
    assert json.loads(out.read_text()) == {"a": [1, 2]}
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]


def test_shown_path_is_relative_under_the_working_folder(tmp_path, monkeypatch):
    from moldiff.utils.io import shown_path

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "runs" / "m.pt") == "runs/m.pt"
    assert shown_path("runs/m.pt") == "runs/m.pt"
    elsewhere = tmp_path.parent / "other.pt"
    assert shown_path(elsewhere) == str(elsewhere)
