"""Wheels for the bare GPU machine: every dependency of the workbook that its image lacks, nothing it has.

The GPU machine (one H200, see README "Performance") runs an image whose ``python3`` already holds torch,
torchvision, timm, numpy, pandas, matplotlib, seaborn, scikit-learn, tensorboard, pytest, ... (the list is
``tools/gpu_image_packages.txt``) but none of grad-cam, papermill, efficientnet-pytorch, ... and it reaches
no package registry. So, here (with network):

    make gpu-wheels            # = python tools/gpu_wheels.py download --out .gpu-wheels

resolves the closure of ``pyproject.toml``'s dependencies (and the ``dev`` extra's test packages) for
CPython 3.12 on manylinux x86_64, leaves out every package the image has, and saves one wheel per missing
package into ``.gpu-wheels/`` (git-ignored) with ``requirements.txt`` (``name==version`` per wheel). Versions
are the ones this interpreter runs where it has them (the ones the test suite passed with); a package with
no wheel on PyPI (grad-cam, efficientnet-pytorch) is built into a pure-Python wheel here. There:

    python3 tools/gpu_wheels.py install --wheels .gpu-wheels --target /tmp/fgvc-gpu-site

installs them with ``pip install --no-index --find-links --no-deps --target`` (the image's torch is never
replaced) and the caller puts the target on ``PYTHONPATH``. ``check`` verifies a wheel folder offline: every
requirement of every wheel (markers evaluated for the target) is met by another wheel or by the image.
"""

from __future__ import annotations

import argparse
import email.parser
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
IMAGE_LIST = Path(__file__).resolve().parent / "gpu_image_packages.txt"
MANIFEST = "requirements.txt"
MAX_MIB = 60.0

# The target: the GPU image's interpreter (KINDS.md: Python 3.12.3 on x86-64 Linux).
PYTHON_VERSION = "3.12"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_26_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
)
MARKER_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "implementation_version": "3.12.3",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "platform_release": "",
    "platform_version": "",
    "extra": "",
}
# A requirement met by another distribution of the image (same import name).
ALIASES = {"opencv-python": "opencv-python-headless"}
# Roots from the dev extra that only lint (not needed to run the tests there).
NOT_NEEDED = {"ruff"}


class WheelError(RuntimeError):
    """A wheel folder is incomplete or a wheel cannot be obtained."""


# ---------------------------------------------------------------------------------------------- inputs
def image_packages(path: Path = IMAGE_LIST) -> set[str]:
    """Canonical names of the distributions the GPU image holds (one per line, '#' comments)."""
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonicalize_name(line))
    return names


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """The project's dependencies plus its ``dev`` extra (the test suite's packages), minus lint tools."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    strings = list(data.get("dependencies", [])) + list(data.get("optional-dependencies", {}).get("dev", []))
    reqs = [Requirement(s) for s in strings]
    return [r for r in reqs if canonicalize_name(r.name) not in NOT_NEEDED and applies(r)]


def applies(req: Requirement, extras: Iterable[str] = ("",)) -> bool:
    """Whether the requirement's marker holds on the target (for any of the requested extras)."""
    if req.marker is None:
        return True
    return any(Marker(str(req.marker)).evaluate({**MARKER_ENV, "extra": extra}) for extra in extras)


def satisfied_by_image(name: str, image: set[str]) -> bool:
    name = canonicalize_name(name)
    return name in image or ALIASES.get(name, "") in image


# ---------------------------------------------------------------------------------------------- wheels
@dataclass
class Wheel:
    path: Path
    name: str
    version: Version
    requires: list[Requirement] = field(default_factory=list)

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


def read_wheel(path: Path) -> Wheel:
    """Name, version and ``Requires-Dist`` of a wheel file (from its METADATA)."""
    name, version, _build, _tags = parse_wheel_filename(path.name)
    with zipfile.ZipFile(path) as zf:
        meta = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1]
        if not meta:
            raise WheelError(f"{path}: no .dist-info/METADATA inside; expected a wheel")
        message = email.parser.Parser().parsestr(zf.read(meta[0]).decode("utf-8", "replace"))
    requires = [Requirement(value) for value in message.get_all("Requires-Dist") or []]
    return Wheel(path, canonicalize_name(name), version, requires)


def needed_by(wheel: Wheel, extras: Iterable[str] = ("",)) -> list[Requirement]:
    """The wheel's requirements that apply on the target (markers with the requested extras)."""
    return [r for r in wheel.requires if applies(r, extras)]


def folder_wheels(folder: Path) -> dict[str, Wheel]:
    wheels: dict[str, Wheel] = {}
    for path in sorted(folder.glob("*.whl")):
        wheel = read_wheel(path)
        if wheel.name in wheels:
            raise WheelError(
                f"{folder}: two wheels of {wheel.name} ({wheels[wheel.name].path.name}, {path.name}); "
                "expected one version per package (pip install stops on two)"
            )
        wheels[wheel.name] = wheel
    return wheels


def check(folder: Path, image: set[str] | None = None, roots: list[Requirement] | None = None) -> list[str]:
    """Problems of a wheel folder (empty: complete). Every root and every requirement of every wheel that
    applies on the target must be met by the image or by a wheel whose version fits the specifier."""
    image = image_packages() if image is None else image
    roots = project_requirements() if roots is None else roots
    problems: list[str] = []
    if not folder.is_dir():
        return [f"{folder}: no such folder; run `make gpu-wheels` (needs network) first"]
    try:
        wheels = folder_wheels(folder)
    except WheelError as exc:
        return [str(exc)]
    manifest = folder / MANIFEST
    if not manifest.is_file():
        problems.append(f"{manifest}: missing; expected the name==version list written by `download`")
    else:
        pins = {canonicalize_name(Requirement(line).name): line.strip()
                for line in manifest.read_text().splitlines() if line.strip() and not line.startswith("#")}
        for name, wheel in wheels.items():
            if pins.get(name) != wheel.pin:
                problems.append(f"{manifest}: expected a line {wheel.pin}, got {pins.get(name)!r}")
        for name in sorted(set(pins) - set(wheels)):
            problems.append(f"{manifest}: {pins[name]} has no wheel in {folder}")

    def meets(req: Requirement, who: str) -> None:
        name = canonicalize_name(req.name)
        if name in wheels:
            version = wheels[name].version
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                problems.append(f"{who} needs {req}, but {folder} holds {name} {version}")
        elif not satisfied_by_image(name, image):
            problems.append(f"{who} needs {req}: neither in {folder} nor in the GPU image's package list")

    for req in roots:
        meets(req, "pyproject.toml")
    for wheel in wheels.values():
        for req in needed_by(wheel):
            meets(req, wheel.path.name)
    for name in wheels:
        if satisfied_by_image(name, image):
            problems.append(f"{folder}: {name} is in the GPU image already; a second copy could shadow it")
    return problems


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.whl")) / 2**20


# ---------------------------------------------------------------------------------------------- download
def _pip(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
                          capture_output=True, text=True)


def _local_pin(req: Requirement) -> str:
    """``name==version`` of what this interpreter runs, when that version meets the requirement."""
    try:
        version = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        return ""
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return ""
    return f"{req.name}=={version}"


def _fetch_one(spec: str, dest: Path, build: Path) -> None:
    """One wheel for the target: a binary wheel from the index, else a pure-Python wheel built from the
    sdist (checked to be ``none-any``)."""
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    binary = _pip(["download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
                   "--implementation", "cp", *platform_args, "-d", str(dest), spec])
    if binary.returncode == 0:
        return
    before = set(build.glob("*.whl"))
    built = _pip(["wheel", "--no-deps", "--no-binary=:all:", "-w", str(build), spec])
    if built.returncode != 0:
        raise WheelError(f"{spec}: no wheel for CPython {PYTHON_VERSION} manylinux x86_64 and no buildable "
                         f"sdist:\n{binary.stderr[-1500:]}\n{built.stderr[-1500:]}")
    for path in set(build.glob("*.whl")) - before:
        tags = parse_wheel_filename(path.name)[3]
        if not all(t.abi == "none" and t.platform == "any" for t in tags):
            raise WheelError(f"{spec}: built {path.name} here, but it is not pure Python (none-any); "
                             "it would not load on the GPU machine")
        shutil.move(str(path), dest / path.name)


def download(out: Path, image: set[str] | None = None, log=print) -> list[Wheel]:
    """Resolve and save the missing wheels into ``out`` (replaced as a whole; see module doc)."""
    image = image_packages() if image is None else image
    out = out.resolve()
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise WheelError(f"{out} exists and holds files this tool did not write (no {MANIFEST}); "
                         "expected an empty folder or one made by `gpu_wheels.py download`")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        build = stage / ".build"
        build.mkdir()
        wheels: dict[str, Wheel] = {}
        pending: list[tuple[Requirement, tuple[str, ...]]] = [(r, ("", *r.extras)) for r in project_requirements()]
        while pending:
            req, extras = pending.pop(0)
            name = canonicalize_name(req.name)
            if satisfied_by_image(name, image):
                continue
            if name not in wheels:
                spec = _local_pin(req) or str(Requirement(f"{req.name}{req.specifier}"))
                log(f"  {spec}")
                known = set(stage.glob("*.whl"))
                _fetch_one(spec, stage, build)
                new = [read_wheel(p) for p in set(stage.glob("*.whl")) - known]
                if len(new) != 1 or new[0].name != name:
                    raise WheelError(f"{spec}: expected one wheel of {name}, got {[w.path.name for w in new]}")
                wheels[name] = new[0]
                extras = ("", *req.extras)
            pending.extend((r, ("", *r.extras)) for r in needed_by(wheels[name], extras))
        shutil.rmtree(build)
        lines = sorted(w.pin for w in wheels.values())
        (stage / MANIFEST).write_text(
            "# written by tools/gpu_wheels.py download: the wheels the GPU image lacks\n" + "\n".join(lines) + "\n"
        )
        problems = check(stage, image)
        if problems:
            raise WheelError("the downloaded wheels are incomplete:\n  " + "\n  ".join(problems))
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(stage, out)
            shutil.rmtree(old)
        else:
            os.replace(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return list(folder_wheels(out).values())


# ---------------------------------------------------------------------------------------------- install
def install(folder: Path, target: Path) -> int:
    """``pip install --no-index --find-links FOLDER --no-deps --target TARGET -r FOLDER/requirements.txt``:
    the image's own packages (torch above all) stay as they are."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise WheelError(f"{manifest}: missing; run `make gpu-wheels` where pip reaches PyPI and carry "
                         f"{folder} to the GPU machine")
    args = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
            "--find-links", str(folder), "--no-deps", "--no-compile", "--upgrade", "--target", str(target),
            "-r", str(manifest)]
    return subprocess.run(args).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/gpu_wheels.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("download", help="resolve and save the missing wheels (needs network)")
    d.add_argument("--out", type=Path, default=ROOT / ".gpu-wheels")
    c = sub.add_parser("check", help="verify a wheel folder offline")
    c.add_argument("--wheels", type=Path, default=ROOT / ".gpu-wheels")
    i = sub.add_parser("install", help="install a wheel folder into --target (on the GPU machine)")
    i.add_argument("--wheels", type=Path, default=ROOT / ".gpu-wheels")
    i.add_argument("--target", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            print(f"resolving the workbook's dependencies for CPython {PYTHON_VERSION} manylinux x86_64, "
                  f"minus the {len(image_packages())} packages of the GPU image:")
            wheels = download(args.out)
            mib = folder_mib(args.out)
            print(f"{len(wheels)} wheels, {mib:.1f} MiB in {args.out}"
                  + (f" (over the {MAX_MIB:.0f} MiB budget)" if mib > MAX_MIB else ""))
            return 0 if mib <= MAX_MIB else 1
        if args.command == "check":
            problems = check(args.wheels)
            for problem in problems:
                print(problem, file=sys.stderr)
            if not problems:
                print(f"{args.wheels}: complete ({folder_mib(args.wheels):.1f} MiB)")
            return 1 if problems else 0
        return install(args.wheels, args.target)
    except WheelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
