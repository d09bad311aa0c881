"""Click commands for models and engines: ``export``, ``build-engine``, ``models``.

Added to the ``dfstream`` group by :mod:`dfstream.cli.main`.  Every
error a user can cause ends as one line on stderr and exit status 1
(``click.ClickException``), never a traceback.
"""
from __future__ import annotations

from pathlib import Path

import click

from engines.loader import MODEL_ERRORS
from dfstream.cli.common import one_line_error


def _batch_sizes(_ctx, _param, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("batch sizes must be positive integers")
    return sizes


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ONNX file to write [default: CHECKPOINT with the suffix .onnx]")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (below 18 uses the legacy exporter)")
@click.option("--check/--no-check", default=True, show_default=True,
              help="compare ONNX Runtime with the checkpoint's torch model on sample crops")
@click.option("--batch-sizes", default="1,4", show_default=True, callback=_batch_sizes,
              help="batch sizes compared in the check")
@click.option("--tolerance", type=float, default=None,
              help="largest accepted |ONNX Runtime - torch| [default: 1e-4 for P(fake), 1e-3 for images]")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "legacy"]), default="auto", show_default=True)
@click.option("--mirror-mean", is_flag=True,
              help="detectors: score each crop and its mirror image, output their mean P(fake) (twice the cost)")
@click.option("--int8", is_flag=True,
              help="detectors: quantise to int8 (QDQ) after the fp32 check -- several times faster on CPUs with "
                   "VNNI/dotprod; refused if P(fake) moves more than 0.02 on average")
@click.option("--calibration", "calibration_media", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="--int8: real face images/videos (file or folder; repeatable) to calibrate on "
                   "[default: the checkpoint's own training faces, from its run directory]")
@click.option("--calibration-crops", type=click.IntRange(min=8), default=256, show_default=True,
              help="--int8: crops to calibrate on (half real faces, half their self-blends)")
def export_command(checkpoint: Path, output: Path | None, opset: int, check: bool, batch_sizes: tuple[int, ...],
                   tolerance: float | None, exporter: str, mirror_mean: bool, int8: bool,
                   calibration_media: tuple[Path, ...], calibration_crops: int) -> None:
    """Export a training CHECKPOINT to ONNX with its metadata and a dynamic batch axis."""
    from engines.export import export_checkpoint

    if calibration_media and not int8:
        raise click.UsageError("--calibration only applies with --int8")
    try:
        crops = _int8_calibration(checkpoint, calibration_media, calibration_crops) if int8 else None
        report = export_checkpoint(checkpoint, output or checkpoint.with_suffix(".onnx"), opset=opset, check=check,
                                   batch_sizes=batch_sizes, tolerance=tolerance, exporter=exporter,
                                   mirror_mean=mirror_mean, int8_calibration=crops)
    except MODEL_ERRORS as exc:
        raise one_line_error(exc) from exc
    click.echo(report.summary())


def _int8_calibration(checkpoint: Path, media: tuple[Path, ...], count: int):
    from engines.metadata import read_metadata
    from train import calibration

    metadata = read_metadata(checkpoint)
    if metadata.output != "p_fake":
        raise click.UsageError(f"{checkpoint} is a {metadata.kind}; --int8 is for detectors only")
    try:
        records = calibration.media_records(list(media)) if media else calibration.training_records(checkpoint)
        return calibration.calibration_crops(records, metadata, count)
    except (calibration.CalibrationError, FileNotFoundError) as exc:
        raise one_line_error(exc) from exc


@click.command("build-engine")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="folder for MODEL.engine and MODEL.engine.json")
@click.option("--fp16/--fp32", default=True, show_default=True, help="build an FP16 engine (or plain FP32)")
@click.option("--min-batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--opt-batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="batch size TensorRT tunes its kernels for")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--check/--no-check", default=True, show_default=True,
              help="compare the engine with the source model before writing it")
@click.option("--tolerance", type=float, default=None,
              help="largest accepted |TensorRT - source| [default: 2e-2 fp16, 5e-3 fp32]")
@click.option("--device", type=int, default=None, help="CUDA device index [default: the current one]")
def build_engine_command(model: Path, output_dir: Path, fp16: bool, min_batch: int, opt_batch: int, max_batch: int,
                         check: bool, tolerance: float | None, device: int | None) -> None:
    """Build a TensorRT engine for this GPU from an ONNX MODEL or a checkpoint (needs CUDA and torch-tensorrt)."""
    from engines.build import build_engine

    try:
        report = build_engine(model, output_dir, fp16=fp16, min_batch=min_batch, opt_batch=opt_batch,
                              max_batch=max_batch, check=check, tolerance=tolerance, device_index=device)
    except MODEL_ERRORS as exc:
        raise one_line_error(exc) from exc
    click.echo(report.summary())


@click.group("models")
def models_group() -> None:
    """The registry of default models: list, fetch, verify."""


@models_group.command("list")
def models_list() -> None:
    """Registered models and where each one is installed."""
    from engines.registry import REGISTRY, installed_path

    width = max(len(name) for name in REGISTRY)
    for entry in sorted(REGISTRY.values(), key=lambda e: e.name):
        where = installed_path(entry)
        status = str(where) if where else "not installed"
        pinned = entry.sha256[:12] if entry.sha256 else "(no sha256)"
        click.echo(f"{entry.name:<{width}} {entry.kind:<14} {pinned:<13} {status}")
        click.echo(f"{'':<{width}} {entry.description} [{entry.license or 'license unknown'}]")


@models_group.command("fetch")
@click.argument("name")
@click.option("--from", "source", default=None, metavar="DIR|URL",
              help="copy from a local folder (searched recursively) or download from this URL")
@click.option("--if-missing", is_flag=True, help="do nothing when a verified copy is already installed")
def models_fetch(name: str, source: str | None, if_missing: bool) -> None:
    """Install model NAME into the user cache, checking its sha256."""
    from engines.registry import ModelNotFoundError, fetch, resolve

    if if_missing:
        try:
            click.echo(f"already installed {name}: {resolve(name)}")
            return
        except ModelNotFoundError:
            pass
        except MODEL_ERRORS as exc:  # a tampered copy is an error to see, not one to download over
            raise one_line_error(exc) from exc
    try:
        path = fetch(name, source)
    except (*MODEL_ERRORS, OSError) as exc:
        raise one_line_error(exc) from exc
    click.echo(f"installed {name}: {path}")


@models_group.command("verify")
@click.argument("model")
def models_verify(model: str) -> None:
    """Check a model file (or an installed model NAME) against the registry."""
    from engines.registry import REGISTRY, identify, resolve, sha256_of, verify

    try:
        path = Path(model).expanduser()
        if not path.is_file() and model in REGISTRY:
            path, entry = resolve(model), REGISTRY[model]
        elif not path.is_file():
            raise click.ClickException(f"{model} is neither a file nor a registered model")
        else:
            entry = identify(path)
            if entry is None:
                raise click.ClickException(f"{path} is not a registered model file (sha256 {sha256_of(path)})")
            verify(path, entry)
    except MODEL_ERRORS as exc:
        raise one_line_error(exc) from exc
    state = "sha256 ok" if entry.sha256 else "no registered sha256, not verified"
    click.echo(f"{path}: model {entry.name!r} ({entry.kind}), {state}")


@models_group.command("hash")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def models_hash(path: Path) -> None:
    """Print the sha256 of a file (to pin a model in the registry)."""
    from engines.registry import sha256_of

    click.echo(f"{sha256_of(path)}  {path}")
