"""The benchmark scripts (sampling ``--quick --smoke``, scaling, training) run end to end on tiny settings and
end with the documented JSON line.

No timing assertions: only that each script runs, and the keys and their types."""

import json

from tests.conftest import run_script


def _run_script(name: str, args: list[str], tmp_path) -> dict:
    out = tmp_path / f"{name}.json"
    proc = run_script(f"{name}.py", *args, "--device", "cpu", "--threads", "1", "--json-out", str(out))
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == res
    return res


def test_bench_sampling_smoke(tmp_path):
    # one thread (set by _run_script): the smoke run must not be slowed by contention with other jobs
    res = _run_script("bench_sampling", ["--quick", "--smoke"], tmp_path)
    for key in ("speedup_vs_edm_config", "mols_per_s", "steps", "device", "n_molecules", "batch_size", "preset",
                "baseline_extrapolated", "baseline_steps", "ms_per_step", "sweep"):
        assert key in res, key
    assert res["device"] == "cpu" and res["smoke"] is True
    assert res["steps"] == 2 and res["n_molecules"] == 2 and res["batch_size"] == 2
    assert res["baseline_steps"] == 2 and res["baseline_extrapolated"] is False
    assert res["speedup_vs_edm_config"] > 0 and res["mols_per_s"] > 0
    assert res["sweep"] and all("ms_per_step" in r for r in res["sweep"])


def test_bench_scaling_smoke(tmp_path):
    res = _run_script("bench_scaling", ["--preset", "tiny", "--sizes", "5", "--batch-size", "1",
                                        "--repeats", "1"], tmp_path)
    assert res["device"] == "cpu" and res["rows"] and res["batch_size"] == 1


def test_bench_training_smoke(tmp_path):
    res = _run_script("bench_training", ["--presets", "tiny", "--batch-sizes", "2", "--steps", "1",
                                         "--warmup", "0", "--synthetic"], tmp_path)
    assert res["device"] == "cpu" and res["rows"]
