"""scripts/angle_spread.py: bond angles grouped by their chemical environment."""

import json

import pytest

from tests.conftest import load_script


def load():
    return load_script("angle_spread.py")


def test_connected_without():
    import numpy as np

    mod = load()
    ring = np.zeros((4, 4), bool)
    for a, b in ((0, 1), (1, 2), (2, 3), (3, 0)):
        ring[a, b] = ring[b, a] = True
    assert mod.connected_without(ring, 0, 2, 1)  # round the other side of the ring
    chain = ring.copy()
    chain[3, 0] = chain[0, 3] = False
    assert not mod.connected_without(chain, 0, 2, 1)


@pytest.mark.qm9
def test_angle_spread_on_a_small_cache(data_root, tmp_path, capsys):
    mod = load()
    out = tmp_path / "spread.json"
    res = mod.main(["--dataset", "qm9_first300", "--data-root", str(data_root), "--n", "40", "--top", "3",
                    "--json", str(out)])
    assert json.loads(out.read_text()) == res
    rows = res["rows"]
    assert rows and all(0 < r["angle_mean_deg"] <= 180 and r["angle_std_deg"] >= 0 for r in rows)
    assert [r["count"] for r in rows] == sorted((r["count"] for r in rows), reverse=True)
    assert {r["where"] for r in rows} <= {"ring", "chain"}
    assert "| angle |" in capsys.readouterr().out


def test_bad_arguments():
    mod = load()
    with pytest.raises(SystemExit):
        mod.main(["--n", "0"])
