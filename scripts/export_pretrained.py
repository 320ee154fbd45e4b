"""Export the EMA weights of a training checkpoint as a shipped model under moldiff/pretrained/.

  python scripts/export_pretrained.py runs/qm9_cpu/checkpoints/last.ckpt --name qm9_default \
      --hardware "2 CPU cores (shared)"

--wall-time-min defaults to the training time the checkpoint's timer recorded over all chunks (runs
trained with ``trainer.max_time``); give it for runs trained without one.

The input may also be an exported model file (e.g. ``model.pt`` of ``scripts/gpu_train.sh``), to ship it
under another name or with a default guidance weight; its training record is kept (``--hardware`` and
``--recipe`` replace those fields when given):

  python scripts/export_pretrained.py g2/model.pt --name qm9_conditional --guidance-scale 2 --property-guidance mu=4

(``--property-guidance P=W`` or ``P=W,LO,HI``: the default weight when property P is the only one given,
where it differs from ``--guidance-scale``, applied at the diffusion times in ``[LO, HI]`` (default every
step); with several properties given the sampler uses ``--guidance-scale``.)

``--predictor-guidance PREDICTOR,SCALE,LO,HI[,PROP=W...][,types=STEP]`` records the predictor guidance the conditional
model samples with when targets are given (``moldiff-sample``'s ``predictor_guidance``; the shipped model:
``qm9_guide,2,0.05,1,alpha=0,types=30``, the guide predictor trained on the generator's half of QM9, on the
coordinates and, at step 30, on the atom-type and charge logits).

``--sampler-settings MIN-MAX:TIME_POWER:TEMPERATURE`` (repeatable) records the sampler settings the model
uses for step counts MIN to MAX when ``time_power`` and ``temperature`` are left out (null):

  python scripts/export_pretrained.py moldiff/pretrained/qm9_fast.pt --name qm9_fast --sampler-settings 20-25:1.5:0.25

The training record can be completed from the run's own files instead of by hand: ``--chunk-records``
takes the ``record.json`` of each ``scripts/gpu_train.sh`` chunk (their molecules/s and minutes), and
``--warm-started-from`` the model file the run started from (its sha256 and training record are nested,
and the training minutes of both are added up):

  python scripts/export_pretrained.py u2/model.pt --name qm9_default \
      --chunk-records u1/record.json u2/record.json --warm-started-from moldiff/pretrained/qm9_default.pt

A model distilled in several rounds of ``scripts/distill_fewstep.py`` (each round's ``record.json``: its states,
optimizer steps and minutes) gets them listed with ``--round-records``, in order; the model's wall time becomes all
the rounds' minutes, states collection included:

  python scripts/export_pretrained.py d/round3/model.pt --name qm9_conditional --guidance-scale 2 \
      --property-guidance mu=4,0.3,1 --predictor-guidance qm9_guide,2,0.05,1,alpha=0,types=30 --round-records d/round1/record.json d/round2/record.json d/round3/record.json \
      --warm-started-from moldiff/pretrained/qm9_conditional.pt

Writes <name>.pt (state_dict of the EMA net + hyper-parameters; fp16 with --half) and <name>.json
(file, sha256, training record). The loader checks the sha256 and loads with weights_only=True.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
from pathlib import Path

import torch

from moldiff.training.checkpoint import sha256
from moldiff.utils.io import atomic_write

OUT = Path(__file__).resolve().parents[1] / "moldiff" / "pretrained"
MAX_BYTES = 16 * 1024 * 1024


def parse_sampler_settings(item: str) -> dict:
    """``MIN-MAX:TIME_POWER:TEMPERATURE`` -> ``{"min_steps", "max_steps", "time_power", "temperature"}``."""
    try:
        steps, power, temp = item.split(":")
        lo, hi = (int(v) for v in steps.split("-"))
        out = {"min_steps": lo, "max_steps": hi, "time_power": float(power), "temperature": float(temp)}
        if not 1 <= lo <= hi or out["time_power"] <= 0 or out["temperature"] <= 0:
            raise ValueError
        return out
    except ValueError:
        raise SystemExit(f"--sampler-settings {item!r}: expected MIN-MAX:TIME_POWER:TEMPERATURE with "
                         "1 <= MIN <= MAX steps and positive values, e.g. 20-25:1.5:0.25") from None


def parse_predictor_guidance(text: str) -> dict:
    """``PREDICTOR,SCALE,LO,HI[,PROP=W...][,types=STEP]`` -> ``{"predictor", "scale", "interval", "weights",
    "type_scale"}`` (``SystemExit`` naming the option; ``types=STEP`` guides the atom-type and charge logits too)."""
    name, *rest = text.split(",")
    weights, types = {}, 0.0
    try:
        scale, lo, hi = (float(v) for v in rest[:3])
        for item in rest[3:]:
            prop, _, w = item.partition("=")
            if prop == "types":
                types = float(w)
            else:
                weights[prop] = float(w)
    except ValueError:
        scale = lo = hi = float("nan")
    if (not name or not scale >= 0 or not 0 <= lo <= hi <= 1 or any(not w >= 0 for w in weights.values())
            or not types >= 0):
        raise SystemExit(f"--predictor-guidance {text!r}: expected PREDICTOR,SCALE,LO,HI[,PROP=WEIGHT...][,types=STEP] "
                         f"with SCALE >= 0, 0 <= LO <= HI <= 1, weights >= 0 and STEP >= 0")
    out = {"predictor": name, "scale": scale, "interval": [lo, hi]}
    out = {**out, "weights": weights} if weights else out
    return {**out, "type_scale": types} if types else out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--name", default="qm9_default")
    ap.add_argument("--half", action="store_true")
    ap.add_argument("--guidance-scale", type=float, default=None,
                    help="record this classifier-free guidance weight as the conditional model's sampling default")
    ap.add_argument("--property-guidance", action="append", default=[], metavar="PROP=W[,LO,HI]",
                    help="default guidance weight (and interval of diffusion times) when PROP alone is given "
                         "(repeatable), e.g. mu=4,0.2,1")
    ap.add_argument("--predictor-guidance", default=None, metavar="PREDICTOR,SCALE,LO,HI[,PROP=W...][,types=STEP]",
                    help="predictor guidance the conditional model samples with when targets are given, e.g. "
                         "qm9_guide,2,0.05,1,alpha=0.5 (a shipped predictor's name or a path; PROP=W weighs that "
                         "property's error; types=STEP steps the atom-type and charge logits too)")
    ap.add_argument("--sampler-settings", action="append", default=[], metavar="MIN-MAX:TIME_POWER:TEMPERATURE",
                    help="time_power and temperature the model samples MIN to MAX steps with when they are not "
                         "given (repeatable), e.g. 20-25:1.5:0.25")
    ap.add_argument("--weights", choices=("ema", "raw"), default="ema",
                    help="the averaged weights (default) or the optimiser's current ones")
    ap.add_argument("--hardware", default=None, help="where it was trained (required for a checkpoint)")
    ap.add_argument("--wall-time-min", type=float, default=None)
    ap.add_argument("--recipe", default=None, help="how it was trained (default for a checkpoint: experiment=qm9_cpu)")
    ap.add_argument("--chunk-records", type=Path, nargs="+", default=[], metavar="RECORD_JSON",
                    help="record.json of each scripts/gpu_train.sh chunk of this run, in order")
    ap.add_argument("--round-records", type=Path, nargs="+", default=[], metavar="RECORD_JSON",
                    help="record.json of each scripts/distill_fewstep.py round that made this model, in order")
    ap.add_argument("--warm-started-from", type=Path, default=None, metavar="MODEL_PT",
                    help="the exported model file this run was warm-started from")
    ap.add_argument("--out-dir", type=Path, default=OUT)
    a = ap.parse_args(argv)
    ck = torch.load(a.ckpt, map_location="cpu", weights_only=True)
    today = datetime.date.today().isoformat()
    if "training_record" in ck and "global_step" not in ck:  # an exported model file
        if a.weights == "raw" or a.half:
            raise SystemExit(f"{a.ckpt} is an exported model file (one set of weights): --weights raw and --half need a checkpoint")
        state = dict(ck["state_dict"])
        record = {**ck["training_record"], "exported": today}
        record.update({k: v for k, v in (("hardware", a.hardware), ("recipe", a.recipe)) if v is not None})
    else:
        if a.hardware is None:
            raise SystemExit("--hardware is required to export a training checkpoint")
        if a.wall_time_min is None:
            seconds = ck.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {}).get("train")
            if seconds is None:
                raise SystemExit(f"{a.ckpt} holds no training time (trained without trainer.max_time): give --wall-time-min")
            a.wall_time_min = round(seconds / 60, 1)
        source = ck["state_dict"]
        if a.weights == "raw":
            if "current_model_state" not in ck:
                raise SystemExit(f"{a.ckpt} holds no separate current weights (trained without EMA): use --weights ema")
            source = ck["current_model_state"]
        state = {k: (v.half() if a.half and v.is_floating_point() else v) for k, v in source.items() if k.startswith("net.")}
        record = {
            "global_step": int(ck["global_step"]), "epoch": int(ck["epoch"]), "hardware": a.hardware,
            "wall_time_min": a.wall_time_min, "recipe": a.recipe or "experiment=qm9_cpu", "source_checkpoint": Path(a.ckpt).name,
            "exported": today, "weights": "EMA" if a.weights == "ema" else "raw (last optimiser step)",
            "dtype": "float16" if a.half else "float32",
        }
    hparams = ck["hyper_parameters"]
    props = (hparams.get("conditioning") or {}).get("properties") or []
    if (a.guidance_scale is not None or a.property_guidance) and not props:
        raise SystemExit("--guidance-scale and --property-guidance need a conditional model")
    if a.guidance_scale is not None:
        hparams = {**hparams, "conditioning": {**hparams["conditioning"], "guidance_scale": a.guidance_scale}}
        record["default_guidance_scale"] = a.guidance_scale
    if a.property_guidance:
        scales, intervals = {}, {}
        for item in a.property_guidance:
            prop, sep, value = item.partition("=")
            try:
                numbers = [float(v) for v in value.split(",")]
            except ValueError:
                numbers = []
            if not sep or prop not in props or len(numbers) not in (1, 3) or (
                    len(numbers) == 3 and not 0 <= numbers[1] <= numbers[2] <= 1):
                raise SystemExit(f"--property-guidance {item!r}: expected PROP=WEIGHT or PROP=WEIGHT,LO,HI "
                                 f"(0 <= LO <= HI <= 1) with PROP one of {props}")
            scales[prop] = numbers[0]
            if len(numbers) == 3:
                intervals[prop] = numbers[1:]
        hparams = {**hparams, "conditioning": {**hparams["conditioning"], "guidance_scales": scales,
                                               "guidance_intervals": intervals}}
        record["default_guidance_scales"] = scales
        if intervals:
            record["default_guidance_intervals"] = intervals
    if a.predictor_guidance:
        if not props:
            raise SystemExit("--predictor-guidance needs a conditional model")
        hparams = {**hparams, "conditioning": {**hparams["conditioning"],
                                               "predictor_guidance": parse_predictor_guidance(a.predictor_guidance)}}
        record["predictor_guidance"] = hparams["conditioning"]["predictor_guidance"]
    if a.sampler_settings:
        settings = [parse_sampler_settings(item) for item in a.sampler_settings]
        hparams = {**hparams, "sampling": {**(hparams.get("sampling") or {}), "settings": settings}}
        record["sampler_settings"] = settings
    if a.chunk_records:
        chunks = [read_json(p, "--chunk-records") for p in a.chunk_records]
        record["molecules_per_second"] = {f"chunk{k + 1}": c.get("molecules_per_second") for k, c in enumerate(chunks)}
        record["chunk_minutes"] = [c.get("chunk_minutes") for c in chunks]
    if a.round_records:
        record.update(rounds_record([read_json(p, "--round-records") for p in a.round_records]))
    if a.warm_started_from:
        record.update(warm_start_record(a.warm_started_from, record.get("wall_time_min")))
    out = {"state_dict": state, "hyper_parameters": hparams, "training_record": record}
    path = a.out_dir / f"{a.name}.pt"
    buf = io.BytesIO()
    torch.save(out, buf)
    size = buf.getbuffer().nbytes
    if size > MAX_BYTES:
        raise SystemExit(f"{path.name} would be {size / 2**20:.1f} MiB > 16 MiB; use --half")
    with atomic_write(path, "wb") as fh:  # creates --out-dir; an existing file is replaced only by a whole one
        fh.write(buf.getbuffer())
    digest = sha256(path)
    info = {"file": path.name, "sha256": digest, "bytes": size, "dataset": ck["hyper_parameters"]["dataset"]["name"],
            "training_record": record}
    with atomic_write(a.out_dir / f"{a.name}.json") as fh:
        fh.write(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))


def read_json(path: Path, option: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{option} {path}: not a readable JSON file ({exc})") from None


def rounds_record(rounds: list[dict]) -> dict:
    """``distillation_rounds`` (each round's teacher, start, states, optimizer steps and minutes) and
    ``wall_time_min`` (all of them, the collection of the states included)."""
    listed = []
    for r in rounds:
        meta = r.get("states_meta", [])
        listed.append({"teacher": r.get("teacher"), "init": r.get("init"), "states": r.get("states"),
                       "states_minutes": round(sum(m.get("seconds", 0.0) for m in meta) / 60, 1),
                       "train_minutes": r.get("wall_time_min"), "optimizer_steps": r.get("optimizer_steps"),
                       "batch_size": r.get("batch_size"), "device": r.get("device"), "threads": r.get("threads"),
                       "states_meta": meta})
    total = sum((r["states_minutes"] or 0.0) + (r["train_minutes"] or 0.0) for r in listed)
    return {"distillation_rounds": listed, "wall_time_min": round(total, 1)}


def warm_start_record(path: Path, wall_time_min: float | None) -> dict:
    """``warm_started_from`` (the earlier model's sha256 and training record) and ``total_training_min`` (this
    run's minutes plus all the earlier model's)."""
    try:
        earlier = torch.load(path, map_location="cpu", weights_only=True)["training_record"]
    except Exception as exc:
        raise SystemExit(f"--warm-started-from {path}: not an exported model file ({exc})") from None
    nested = {"sha256": sha256(path), **earlier}
    before = earlier.get("total_training_min", earlier.get("total_gpu_training_min", earlier.get("wall_time_min")))
    out = {"warm_started_from": nested}
    if wall_time_min is not None and before is not None:
        out["total_training_min"] = round(float(wall_time_min) + float(before), 2)
    return out


if __name__ == "__main__":
    main()
