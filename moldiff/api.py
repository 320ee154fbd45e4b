"""Python API for notebooks and scripts: load a trained model, sample RDKit molecules, score them.

    import moldiff

    model = moldiff.load_pretrained("qm9")           # the shipped QM9 model (or a checkpoint path)
    mols = model.sample(8, steps=50, seed=0)          # RDKit Mols with one 3D conformer each
    metrics = moldiff.evaluate(mols)                  # stability, validity, uniqueness, ...

Sampling runs the same code as ``moldiff-sample`` (``moldiff.generate``): the same settings give the
same molecules as the command line (same device, same ``batch_size``). Everything heavy (torch, RDKit)
is imported on first use, so ``import moldiff`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    import torch
    from rdkit import Chem

    from moldiff.chem.molecule import Molecule
    from moldiff.training.checkpoint import LoadedModel

#: Names of the shipped models accepted by :func:`load_pretrained` -> file stem under ``moldiff/pretrained``.
PRETRAINED = {"qm9": "qm9_fast", "qm9_fast": "qm9_fast", "qm9_base": "qm9_default", "qm9_conditional": "qm9_conditional"}  # = training.checkpoint.SHIPPED (kept light: no torch import)

#: Values of ``decode`` in :meth:`MoleculeGenerator.sample`.
DECODINGS = ("argmax", "map")


class MoleculeGenerator:
    """A trained model ready to sample; made by :func:`load_pretrained`.

    Attributes:
        model: the rebuilt denoiser, diffusion, vocabulary and dataset statistics.
        device: where sampling runs.
    """

    def __init__(self, model: LoadedModel, device: torch.device) -> None:
        self.model = model
        self.device = device

    @property
    def path(self) -> str:
        """The checkpoint or weights file the model was loaded from."""
        return self.model.path

    @property
    def dataset(self) -> str:
        """Name of the dataset the model was trained on."""
        return self.model.dataset

    @property
    def properties(self) -> list[str]:
        """Properties the model is conditioned on (empty for an unconditional model)."""
        return self.model.properties

    def __repr__(self) -> str:
        cond = f", conditioned on {self.properties}" if self.properties else ""
        return f"MoleculeGenerator({self.path!r}, dataset={self.dataset!r}{cond}, device={self.device.type!r})"

    def sample(
        self,
        n: int,
        steps: int = 100,
        seed: int = 0,
        conditioning: Mapping[str, float] | None = None,
        decode: str = "map",
        *,
        batch_size: int = 100,
        sampler: str = "ancestral",
        num_atoms: int | list[int] | None = None,
        guidance_scale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
        relax: str = "none",
        time_power: float | None = None,
        temperature: float | None = None,
        predictor_guidance: Mapping[str, Any] | None = None,
    ) -> list[Chem.Mol]:
        """Sample ``n`` molecules.

        Args:
            n: number of molecules.
            steps: reverse diffusion steps (any number; fewer is faster and rougher).
            seed: the same seed gives the same molecules (on the same device, with the same ``batch_size``).
            conditioning: target value of each property the model is conditioned on, in dataset units
                (QM9: ``gap``/``homo``/``lumo`` meV, ``alpha`` bohr^3, ``mu`` D, ``Cv`` cal/mol/K); None
                for an unconditional model.
            decode: ``map`` (the most probable joint assignment of atom types, charges and bonds with allowed
                valences, one connected molecule; argmax when none is found in time) or ``argmax`` (each class
                on its own: the raw model output).
            batch_size: molecules sampled together.
            sampler: ``ancestral`` or ``ddim``.
            time_power: spacing of the time grid (``moldiff-sample``'s ``time_power``; None: the model's own
                for ``steps``, e.g. 1.5 for the default QM9 model at 20 to 25 steps, else 1 (uniform)).
            temperature: categorical sampling temperature of the intermediate steps (``moldiff-sample``'s
                ``temperature``; None: the model's own for ``steps``, e.g. 0.25 for the default QM9 model at 20
                to 25 steps, else 1).
            num_atoms: None (the training histogram), a fixed atom count, or a range ``[lo, hi]``.
            guidance_scale: classifier-free guidance weight of a conditional model (1 = plain conditional;
                None: the model's default for the given properties).
            guidance_interval: ``(lo, hi)``: guidance only at diffusion times in this interval (None: the
                model's default for the given properties; every step when it records none).
            relax: ``none``, ``mmff`` (MMFF94s, else UFF) or ``uff``: force-field relaxation of the
                sanitizable molecules.
            predictor_guidance: ``moldiff-sample``'s ``predictor_guidance`` options (``predictor``, ``scale``,
                ``interval``, ``max_step``, ``weights``, ``type_scale``, ``max_logit_step``), e.g.
                ``{"predictor": "qm9_guide"}`` to steer an unconditional model toward ``conditioning`` with the
                shipped guide predictor, or ``{"predictor": "none"}`` to turn off the guidance a model records
                (None: the model's own).

        Returns:
            Up to ``n`` RDKit molecules (molecules with non-finite coordinates are dropped), each with explicit
            hydrogens, formal charges, bonds and one 3D conformer, named ``moldiff_<index>``, with the
            sampling settings as properties (``moldiff_steps``, ``moldiff_seed``, ``moldiff_decoding``, ...).
            They are not sanitized: ``Chem.SanitizeMol`` raises for an invalid one.

        Raises:
            ValueError: a setting out of range, or targets that do not fit the model.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a whole number >= 1, got {n!r}")
        from omegaconf import OmegaConf

        from moldiff import generate
        from moldiff.chem.rdkit_conv import to_rdkit
        from moldiff.config import packaged

        settings = packaged("sample.yaml")
        given = dict(conditioning or {})
        settings.update(n_samples=n, steps=steps, seed=seed, decode=decode, batch_size=batch_size, sampler=sampler,
                        num_atoms=num_atoms, guidance_scale=guidance_scale, relax=relax, progress=False)
        if guidance_interval is not None:
            settings["guidance_interval"] = list(guidance_interval)
        if time_power is not None:
            settings["time_power"] = time_power
        if temperature is not None:
            settings["temperature"] = temperature
        settings["conditioning"] = {**{k: None for k in settings["conditioning"]}, **given}
        unknown = sorted(set(predictor_guidance or {}) - set(settings["predictor_guidance"]))
        if unknown:
            raise ValueError(f"predictor_guidance: unknown options {unknown}; known: {sorted(settings['predictor_guidance'])}")
        settings["predictor_guidance"] = {**settings["predictor_guidance"], **dict(predictor_guidance or {})}
        cfg = OmegaConf.create(settings)
        generate.check_numbers(cfg)
        generate.check_decode_relax(cfg)
        atoms = generate.parse_num_atoms(cfg.num_atoms)
        generate.resolve_predictor_guidance(cfg, self.model)
        guide = generate.load_guide(cfg, self.model, self.device)
        targets = generate.read_targets(cfg, self.model, n, guide)
        generate.resolve_guidance(cfg, self.model, targets)
        generate.resolve_sampler_settings(cfg, self.model)
        generate.warn_untrained_settings(cfg, self.model, atoms)
        mols: list[Molecule] = []
        for b in range((n + batch_size - 1) // batch_size):
            kept, _, _ = generate.sample_batch(b, cfg, self.model, targets, None, atoms, self.device, guide)
            mols += kept
        return [to_rdkit(m) for m in mols]


def load_pretrained(name: str | Path = "qm9", device: str = "auto") -> MoleculeGenerator:
    """Load a shipped model by name, or a trained model from a checkpoint or exported weights file.

    Args:
        name: ``qm9`` (the unconditional model shipped with moldiff, distilled for few steps; ``qm9_fast``
            names the same model), ``qm9_base`` (the model it was distilled from: worse at 25-50 steps, about
            the same at 100), ``qm9_conditional`` (the shipped
            model conditioned on any subset of alpha, gap, homo, lumo, mu and Cv; both are checked against
            their recorded sha256), or the path
            of a ``.ckpt`` written by ``moldiff-train`` or a ``.pt`` written by ``scripts/export_pretrained.py``.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        A :class:`MoleculeGenerator` holding the EMA weights.

    Raises:
        ValueError: an unknown name, a missing or unreadable file, or a checkpoint of another format.
    """
    from moldiff.generate import load_checkpoint, pick_device

    path: str | None
    if str(name) in PRETRAINED:
        from moldiff.training.checkpoint import CheckpointError, pretrained_path

        try:
            path = str(pretrained_path(PRETRAINED[str(name)]))
        except CheckpointError as exc:
            raise ValueError(str(exc)) from None
    else:
        p = Path(name).expanduser()
        if not p.exists():
            raise ValueError(f"{str(name)!r} is neither a shipped model ({', '.join(PRETRAINED)}) nor an existing "
                             f"checkpoint file")
        path = str(p)
    dev = pick_device(device)
    return MoleculeGenerator(load_checkpoint(path, dev), dev)


def evaluate(
    mols: Iterable[Chem.Mol | Molecule],
    reference: str | None = None,
    steps: int | None = None,
    data_root: str | None = None,
) -> dict[str, Any]:
    """Score a set of molecules with the metrics of ``moldiff-evaluate`` (definitions: docs/metrics.md).

    Args:
        mols: RDKit molecules with a 3D conformer and explicit hydrogens (as :meth:`MoleculeGenerator.sample`
            returns them), or ``moldiff.chem.molecule.Molecule`` objects.
        reference: a dataset name (e.g. ``qm9``; its cache is built once if missing) or cache folder for
            novelty and the distribution distances; None skips them.
        steps: sampling steps that produced the molecules, recorded in the result.
        data_root: where dataset caches live (default ``$MOLDIFF_DATA`` or ``data/processed``).

    Returns:
        The metrics dict of :func:`moldiff.metrics.evaluate_molecules`: ``atom_stability``,
        ``mol_stability``, ``validity``, ``connected_validity``, ``uniqueness``, ``novelty``, ``edm_*``,
        ``counts``, ...

    Raises:
        ValueError: a molecule without a 3D conformer, an empty set, or an unknown reference dataset.
    """
    from moldiff.chem.molecule import Molecule
    from moldiff.chem.rdkit_conv import from_rdkit
    from moldiff.data.registry import open_reference
    from moldiff.metrics import evaluate_molecules

    items = list(mols)
    if not items:
        raise ValueError("no molecules to evaluate")
    converted = [m if isinstance(m, Molecule) else from_rdkit(m) for m in items]
    ref = None
    if reference is not None:
        import sys

        ref = open_reference(str(reference), data_root, announce=lambda line: print(f"moldiff: {line}", file=sys.stderr))
    return evaluate_molecules(converted, ref, steps=steps)


def predict_properties(
    mols: Iterable[Chem.Mol | Molecule],
    predictor: str | Path | None = None,
    targets: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Predict alpha, gap, homo, lumo, mu and Cv of each molecule with the shipped QM9 property predictor
    (the E(3)-invariant network that scores conditional generation), as ``moldiff-evaluate predict=true``.

    Args:
        mols: RDKit molecules with a 3D conformer and explicit hydrogens, or ``Molecule`` objects.
        predictor: a predictor checkpoint; None uses the shipped one.
        targets: values to score molecules against when they carry no ``target_<property>`` property
            (conditional samples do).

    Returns:
        ``properties`` (per property: ``unit``, ``mean``, ``std``, ``mae_vs_target``, ``n_targets``),
        ``properties_order`` and ``values`` (one list per molecule in that order; None for a molecule
        with an element outside the predictor's vocabulary).
    """
    from moldiff.chem.molecule import Molecule
    from moldiff.chem.rdkit_conv import from_rdkit
    from moldiff.metrics.properties import predict_properties as predict
    from moldiff.training.checkpoint import CheckpointError
    from moldiff.training.property_module import load_property_module

    converted = [m if isinstance(m, Molecule) else from_rdkit(m) for m in mols]
    try:
        model = load_property_module(predictor)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    return predict(converted, model, dict(targets or {}))
