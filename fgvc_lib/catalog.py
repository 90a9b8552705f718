"""The notebooks, each declared once: parameters class, experiment class, notebook file, embedded-data writer
(``fgvc synth``) and report parameter files. ``config``, the CLI, ``fgvc train``, the grid and the docs all
read this table; nothing else lists the notebooks.

A new notebook is one :class:`Notebook` passed to :func:`register_notebook` (classes named as
``"module:attribute"`` strings, imported on first use, so this module imports nothing heavy). Notebooks of
other packages are found through the ``FGVC_NOTEBOOKS`` environment variable: comma-separated module names
imported on the first lookup (each registers its notebooks); papermill kernels, grid workers and ``torchrun``
ranks inherit it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .registry import Registry

PLUGINS_ENV = "FGVC_NOTEBOOKS"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def import_object(ref: str) -> Any:
    """``"package.module:Attribute"`` -> the attribute (errors name the reference)."""
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'package.module:Attribute', got {ref!r}")
    try:
        return getattr(importlib.import_module(module), attr)
    except AttributeError:
        raise ImportError(f"{ref}: module {module!r} has no attribute {attr!r}") from None


@dataclass(frozen=True)
class Synth:
    """``fgvc synth <name>``: the writer of a data set in its real on-disk format.

    ``options`` maps the CLI's option names (``classes``, ``per_class``, ``size``, ``seed``, ...) to the
    writer's keyword names; ``defaults`` are the CLI defaults of those options; ``wrote`` is the message
    (``{root}`` is replaced by the folder the writer returns)."""

    name: str
    writer: str
    options: Mapping[str, str]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    wrote: str = "wrote {root}"
    help: str = ""

    def write(self, out: str | Path, given: Mapping[str, Any]) -> Path:
        """Call the writer with the CLI options that were given (others: ``defaults``, then the writer's own);
        an option the writer does not take is an error naming it."""
        unknown = [k for k, v in given.items() if v is not None and k not in self.options]
        if unknown:
            flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
            takes = ", ".join("--" + k.replace("_", "-") for k in self.options)
            raise ValueError(f"fgvc synth {self.name}: {flags} does not apply here; it takes {takes}")
        kwargs = {self.options[k]: v for k, v in {**self.defaults, **{k: v for k, v in given.items()
                                                                         if v is not None}}.items()}
        return Path(import_object(self.writer)(out, **kwargs))


@dataclass(frozen=True)
class Notebook:
    """One notebook of the workbook."""

    name: str
    params: str  # "module:Class" of its ExperimentParams subclass
    experiment: str  # "module:Class" of its Experiment subclass
    synth: Synth | None = None
    report_files: tuple[str, ...] = ()  # parameters/*.yaml with the reports' settings and grids
    path: str = ""  # the .ipynb; default notebooks/<name>.ipynb of the project
    description: str = ""

    def params_class(self) -> type:
        return import_object(self.params)

    def experiment_class(self) -> type:
        return import_object(self.experiment)

    def notebook_path(self) -> Path:
        return Path(self.path) if self.path else PROJECT_ROOT / "notebooks" / f"{self.name}.ipynb"


NOTEBOOKS: Registry[Notebook] = Registry("notebook")
_plugins_loaded: set[str] = set()


def register_notebook(notebook: Notebook, *, replace: bool = False) -> Notebook:
    """Declare a notebook (a second one of the same name is an error unless ``replace``)."""
    if notebook.synth is not None:
        clash = [n for n in NOTEBOOKS if n != notebook.name and (s := NOTEBOOKS.get(n).synth) is not None
                 and s.name == notebook.synth.name]
        if clash:
            raise ValueError(f"synth name {notebook.synth.name!r} of notebook {notebook.name!r} is taken by "
                             f"notebook {clash[0]!r}")
    return NOTEBOOKS.register(notebook.name, notebook, replace=replace)


def _load_plugins() -> None:
    for module in (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",")):
        if module and module not in _plugins_loaded:
            _plugins_loaded.add(module)
            try:
                importlib.import_module(module)
            except BaseException as exc:  # not loaded: the next lookup tries again (and fails the same way)
                _plugins_loaded.discard(module)
                if isinstance(exc, ImportError):
                    raise ImportError(f"{PLUGINS_ENV}: cannot import notebook module {module!r}: {exc}") from exc
                raise


def get_notebook(name: str) -> Notebook:
    """The declaration of a notebook (an unknown name fails with the known ones and the closest)."""
    _load_plugins()
    return NOTEBOOKS.get(name)


def notebook_names() -> list[str]:
    _load_plugins()
    return [n for n in _ORDER if n in NOTEBOOKS] + [n for n in NOTEBOOKS if n not in _ORDER]


def synth_commands() -> dict[str, Synth]:
    """``fgvc synth`` data set name -> its writer declaration."""
    return {nb.synth.name: nb.synth for nb in map(get_notebook, notebook_names()) if nb.synth is not None}


# ---------------------------------------------------------------------------------------------- the four
_ORDER = ("bird", "cifar100", "inat_bbn", "multilabel")

register_notebook(Notebook(
    name="bird",
    params="fgvc_lib.config:BirdParams",
    experiment="fgvc_lib.experiments.bird:BirdExperiment",
    synth=Synth("bird", "fgvc_lib.data.synth.cub:write_cub",
                {"classes": "classes", "per_class": "per_class", "size": "size", "seed": "seed"},
                {"classes": 10, "per_class": 30, "size": 128},
                "wrote a synthetic CUB-200-2011 tree to {root}", "CUB-200-2011 layout"),
    report_files=("bird_report.yaml", "bird_sam.yaml", "bird_ensemble.yaml", "bird_ohem_cyclical.yaml",
                  "bird_ohem_step.yaml"),
    description="CUB-style fine-grained birds: EfficientNet-B4, SAM, ensembles, OHEM",
))
register_notebook(Notebook(
    name="cifar100",
    params="fgvc_lib.config:Cifar100Params",
    experiment="fgvc_lib.experiments.cifar100:Cifar100Experiment",
    synth=Synth("cifar100", "fgvc_lib.data.synth.cifar:write_cifar100",
                {"per_class": "train_per_class", "test_per_class": "test_per_class", "seed": "seed"},
                {"per_class": 20, "test_per_class": 5},
                "wrote synthetic CIFAR-100 python files to {root}/cifar-100-python", "cifar-100-python/"),
    report_files=("cifar100_report.yaml", "cifar100_table1.yaml"),
    description="CIFAR-100: EfficientNet-B4 behind upsampling, Swin-B; CE, MC, focal, FLSD-53",
))
register_notebook(Notebook(
    name="inat_bbn",
    params="fgvc_lib.config:InatBBNParams",
    experiment="fgvc_lib.experiments.inat_bbn:InatBBNExperiment",
    synth=Synth("inat", "fgvc_lib.data.synth.inat:write_inat",
                {"classes": "classes", "max_per_class": "max_per_class", "imbalance": "imbalance",
                 "val_per_class": "val_per_class", "size": "size", "seed": "seed"},
                {"classes": 30, "max_per_class": 60, "imbalance": 20.0, "val_per_class": 3, "size": 96},
                "wrote a synthetic iNat-2019 set (train2019.json, val2019.json, images) to {root}",
                "iNat-2019 JSON"),
    report_files=("inat_bbn_report.yaml", "inat_ablation.yaml", "inat_methods.yaml"),
    description="long-tailed iNaturalist-2019: BBN, samplers, CAM crops, complement entropy",
))
register_notebook(Notebook(
    name="multilabel",
    params="fgvc_lib.config:MultilabelParams",
    experiment="fgvc_lib.experiments.multilabel:MultilabelExperiment",
    synth=Synth("multilabel", "fgvc_lib.data.synth.multilabel:write_multilabel",
                {"images": "images", "size": "size", "seed": "seed"}, {"images": 2000, "size": 128},
                "wrote a synthetic multi-label set (images/, annotations/) to {root}",
                "images/ + annotations/<label>.txt"),
    report_files=("multilabel_report.yaml", "multilabel_grid.yaml"),
    description="14 labels, half the images without any: BCE vs MSE, one-cycle vs Adam, thresholds",
))
