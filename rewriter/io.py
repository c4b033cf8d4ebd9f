"""Loading and saving models: clear one-line errors and atomic writes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import onnx


class InputError(Exception):
    """A problem with what the user gave us; the CLI prints it on one line and exits 2."""


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check an ONNX model, turning every failure into an :class:`InputError`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    try:
        data = p.read_bytes()
    except OSError as err:
        raise InputError(f"{p}: cannot read ({err.strerror})") from err
    if not data:
        raise InputError(f"{p}: empty file, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as err:  # protobuf's DecodeError and friends
        raise InputError(f"{p}: not a valid ONNX model (protobuf parse failed: {first_line(err)})") from err
    if not model.HasField("graph") or not model.opset_import:
        raise InputError(f"{p}: not an ONNX model (no graph or no opset import); is the file truncated?")
    try:
        onnx.load_external_data_for_model(model, str(p.parent)) if _has_external_data(model) else None
    except Exception as err:
        raise InputError(f"{p}: cannot load external data ({first_line(err)})") from err
    try:
        onnx.checker.check_model(model)
    except Exception as err:
        raise InputError(f"{p}: model fails onnx.checker: {first_line(err)}") from err
    return model


def _has_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def check_output_path(path: str | os.PathLike, input_path: str | os.PathLike | None = None) -> Path:
    """Refuse an output path whose folder is missing, or that is the input itself."""
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{p}: output folder {folder} does not exist")
    if p.is_dir():
        raise InputError(f"{p}: is a folder; give a file name for the output model")
    if input_path is not None and p.exists() and p.resolve() == Path(input_path).resolve():
        raise InputError(f"{p}: output is the input file; choose another output path")
    return p


def write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it over ``path``.

    A failure removes the temp file and leaves an existing ``path`` untouched.
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent if str(p.parent) else "."))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _target_mode(p))  # mkstemp makes 0600 files
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _target_mode(path: Path) -> int:
    """Keep an existing file's permissions; otherwise the usual 0666 less the umask."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Serialize ``model`` to ``path`` atomically."""
    data = model.SerializeToString()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    write_atomically(path, write)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Byte-for-byte copy, atomically (used when there is nothing to rewrite)."""
    write_atomically(dst, lambda tmp: shutil.copyfile(src, tmp))


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, for one-line error output."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
