"""Loading and saving models: clear one-line errors and atomic writes.

External data: locations must stay inside the model's folder (checked before
anything is read). A model that came with external data is written the same
way, its weights in ``OUT.data`` beside ``OUT``, with a relative location.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx
from onnx.external_data_helper import _get_all_tensors, load_external_data_for_tensor, uses_external_data

from .graphs import tensor_bytes, weightless_copy
from .weights_on_disk import (
    check_on_disk_model,
    external_info,
    parse_leaving_weights,
    point_at,
    save_with_external_data,
    serialized_pieces,
    serialized_size,
)

# Protobuf cannot serialize a message past 2 GiB; stay well below it.
SINGLE_FILE_LIMIT = 1_800_000_000


class InputError(Exception):
    """A problem with what the user gave us; the CLI prints it on one line and exits 2."""


@dataclass
class LoadedModel:
    """A model and where its weights came from."""

    model: onnx.ModelProto
    path: Path
    external_files: list[Path] = field(default_factory=list)  # resolved paths of its external data


def load_model_with_sources(path: str | os.PathLike, *, weights_on_disk: bool = False) -> LoadedModel:
    """Read and check an ONNX model, turning every failure into an :class:`InputError`;
    also tell which external data files were read.

    ``weights_on_disk``: main-graph initializers of at least :data:`ON_DISK_MIN_BYTES`
    stay in their file, whether external data or inside the model file itself (see
    :mod:`rewriter.weights_on_disk`): they become external data with an absolute location.
    :func:`save_model` and the validation sessions copy them from there. Only for
    callers that never read their values.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    light = parse_leaving_weights(p, ON_DISK_MIN_BYTES) if weights_on_disk else None
    if light is not None:
        model, left_in_file = light
        checker_error = None  # checked below, once the weights left in the file are described
    else:
        left_in_file = []
        # The checker reads the file itself. Run it first: while it holds its own copy
        # of the weights ours does not exist yet (peak memory). Its verdict waits until
        # our own checks have had their say, so errors stay specific.
        checker_error = None
        try:
            onnx.checker.check_model(str(p))
        except Exception as err:
            checker_error = err
        model = _parse_whole(p)
    if not model.HasField("graph") or not model.opset_import:
        raise InputError(f"{p}: not an ONNX model (no graph or no opset import); is the file truncated?")
    external = external_data_files(model, p.parent)
    if external:
        try:
            _load_external_data(model, p.parent, keep_big_on_disk=weights_on_disk)
        except Exception as err:
            raise InputError(f"{p}: cannot load external data ({first_line(err)})") from err
    for index, offset, length in left_in_file:
        point_at(model.graph.initializer[index], p.resolve(), offset, length)
    if left_in_file:
        checker_error = check_on_disk_model(model)
    # From the file: checking the in-memory model would serialize another copy (and fails past 2 GiB).
    if checker_error is not None and not _only_missing_shapes(model, checker_error):
        raise InputError(f"{p}: model fails onnx.checker: {first_line(checker_error)}") from checker_error
    return LoadedModel(model, p, external)


def _parse_whole(p: Path) -> onnx.ModelProto:
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
    return model


# Peak memory: external initializers this big can stay in their file (see load_model_with_sources).
ON_DISK_MIN_BYTES = 1 << 20


def _load_external_data(model: onnx.ModelProto, base: Path, *, keep_big_on_disk: bool) -> None:
    """Read external data into the model, except (``keep_big_on_disk``) big main-graph
    initializers, which get an absolute location instead (locations were checked
    relative and inside ``base`` by :func:`external_data_files`)."""
    if keep_big_on_disk:
        for tensor in model.graph.initializer:
            if uses_external_data(tensor) and tensor_bytes(tensor, in_memory=False) >= ON_DISK_MIN_BYTES:
                info = external_info(tensor)
                point_at(
                    tensor, (base / info["location"]).resolve(), int(info.get("offset", 0)),
                    int(info.get("length", tensor_bytes(tensor, in_memory=False))),
                )
    for tensor in _get_all_tensors(model):
        location = external_info(tensor).get("location", "")
        if not uses_external_data(tensor) or os.path.isabs(location):
            continue
        load_external_data_for_tensor(tensor, str(base))
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


def _only_missing_shapes(model: onnx.ModelProto, err: Exception) -> bool:
    """The checker insists on a shape for graph inputs and outputs, which many
    hand-built and exported models omit and onnxruntime does not need. Such a
    model passes when the shapes inference finds are filled in."""
    if "Field 'shape' of 'type' is required" not in str(err):
        return False
    light = weightless_copy(model, keep_below_bytes=0)
    # The checker also refuses a data-less initializer: describe the weights as typed inputs instead.
    declared = {v.name for v in light.graph.input}
    light.graph.input.extend(
        onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in light.graph.initializer if t.name not in declared
    )
    del light.graph.initializer[:]
    try:
        onnx.checker.check_model(onnx.shape_inference.infer_shapes(light))
    except Exception:
        return False
    return True


def external_data_files(model: onnx.ModelProto, base: Path) -> list[Path]:
    """The external data files ``model`` refers to, refusing any outside ``base``.

    Checked before anything is read: absolute locations, ``..`` and symlinks
    that leave the model's folder are refused.
    """
    root = base.resolve()
    files: list[Path] = []
    for tensor in _sparse_tensors(model):
        if uses_external_data(tensor):
            # onnx does not load these, and onnxruntime would resolve them against the working directory.
            raise InputError(f"sparse tensor '{tensor.name}' keeps its data in an external file; not supported")
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        info = external_info(tensor)
        location = info.get("location", "")
        if not location:
            raise InputError(f"tensor '{tensor.name}' has external data without a location")
        if os.path.isabs(location) or Path(location).is_absolute() or ".." in Path(location.replace("\\", "/")).parts:
            raise InputError(f"tensor '{tensor.name}': external data location '{location}' leaves the model's folder; refused")
        target = (base / location).resolve()
        if root != target and root not in target.parents:
            raise InputError(f"tensor '{tensor.name}': external data location '{location}' resolves outside the model's folder; refused")
        if not target.is_file():
            raise InputError(f"tensor '{tensor.name}': external data file '{location}' is missing")
        if target not in files:
            files.append(target)
    return files


def _sparse_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The values and indices of every sparse tensor: sparse initializers and sparse attributes."""
    found: list[onnx.TensorProto] = []

    def from_sparse(sparse: onnx.SparseTensorProto) -> None:
        found.extend([sparse.values, sparse.indices])

    def visit(graph: onnx.GraphProto) -> None:
        for sparse in graph.sparse_initializer:
            from_sparse(sparse)
        visit_nodes(graph.node)

    def visit_nodes(nodes) -> None:
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("sparse_tensor"):
                    from_sparse(attr.sparse_tensor)
                for sparse in attr.sparse_tensors:
                    from_sparse(sparse)
                for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    visit(sub)

    visit(model.graph)
    for function in model.functions:
        visit_nodes(function.node)
    return found


def check_output_path(path: str | os.PathLike, input_path: str | os.PathLike | None = None, *, allow_input: bool = False) -> Path:
    """Refuse an output path whose folder is missing, or that is the input itself."""
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{p}: output folder {folder} does not exist")
    if p.is_dir():
        raise InputError(f"{p}: is a folder; give a file name for the output model")
    if not allow_input and input_path is not None and p.exists() and p.resolve() == Path(input_path).resolve():
        raise InputError(f"{p}: output is the input file; choose another output path (or pass --in-place)")
    return p


def write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it over ``path``.

    A failure removes the temp file and leaves an existing ``path`` untouched.
    """
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent if str(p.parent) else "."))
    except OSError as err:
        raise InputError(f"{p}: cannot write there ({err.strerror})") from err
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _target_mode(p))  # mkstemp makes 0600 files
        os.replace(tmp, p)
    except OSError as err:
        _remove(tmp)
        raise InputError(f"{p}: cannot write ({err.strerror or err})") from err
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)


def _target_mode(path: Path) -> int:
    """Keep an existing file's permissions; otherwise the usual 0666 less the umask."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def data_file_for(path: str | os.PathLike) -> Path:
    """Where :func:`save_model` puts external data for ``path``."""
    p = Path(path)
    return p.with_name(p.name + ".data")


def save_model(model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool = False, protect: tuple[Path, ...] = ()) -> None:
    """Serialize ``model`` to ``path`` atomically.

    With ``external_data`` (or when the model is too big for one protobuf), the
    weights go to ``path.data`` beside it, with a relative location. ``protect``
    lists files (the input's own data) that must never be overwritten.
    """
    p = Path(path)
    if not external_data and serialized_size(model) < SINGLE_FILE_LIMIT:

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                for piece in serialized_pieces(model):
                    f.write(piece)

        write_atomically(p, write)
        return
    data_path = data_file_for(p)
    if data_path.resolve() in {f.resolve() for f in protect}:
        raise InputError(f"{p}: its data file {data_path.name} would overwrite the input (its model or external data); choose another output name")
    folder = p.parent if str(p.parent) else Path(".")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(folder)))
    except OSError as err:
        raise InputError(f"{p}: cannot write there ({err.strerror})") from err
    try:
        save_with_external_data(model, staging / p.name, data_path.name)
        for name in (data_path.name, p.name):
            if (staging / name).exists():
                os.chmod(staging / name, _target_mode(folder / name))
                os.replace(staging / name, folder / name)  # data first: the model never points at missing data
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def copy_model_files(loaded: LoadedModel, dst: str | os.PathLike) -> None:
    """An unchanged copy of the input at ``dst`` (used when there is nothing to rewrite)."""
    if loaded.external_files:
        save_model(loaded.model, dst, external_data=True, protect=tuple(loaded.external_files))
    else:
        write_atomically(dst, lambda tmp: shutil.copyfile(loaded.path, tmp))


def release_freed_memory() -> None:
    """Hand memory freed by dropped weights or sessions back to the system (glibc keeps it otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, for one-line error output."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
