"""detrc: prepares DETR-family detection transformers (ONNX) for NVIDIA TensorRT.

The functions here call the detrc library in this process (no subprocess, no temporary files
for in-memory models) and release the GIL while they work::

    import onnx, detrc
    model = onnx.load("detr.onnx")
    compiled, report = detrc.compile(model, verify=True)
    print(report["nodes_before"], "->", report["nodes_after"], "nodes")
    onnx.save(compiled, "detr.detrc.onnx")

- :func:`compile` rewrites a model (the ``detrc compile`` pipeline) and reports what changed;
- :func:`inspect` describes a model or an engine;
- :func:`build` makes a TensorRT-RTX engine (``detrc build``);
- :func:`run` detects objects (and instance masks) on images (``detrc run``);
- :func:`passes` lists the passes.

Errors are :class:`detrc.Error` subclasses carrying detrc's message; see ``docs/python.md``.
The ``detrc`` command installed with this package is the same command line as the
cargo-built one.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import (
    Any,
    Dict,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    TypedDict,
    Union,
)

from detrc import _detrc
from detrc._errors import (
    BuildError,
    CompileError,
    Error,
    FileError,
    InternalError,
    ModelError,
    ReferenceRuntimeError,
    RunError,
    UsageError,
    VerificationError,
)

__version__: str = _detrc.__version__

__all__ = [
    "compile",
    "inspect",
    "build",
    "run",
    "passes",
    "CompileResult",
    "CompileReport",
    "PassStep",
    "Verification",
    "OutputDiff",
    "PassInfo",
    "Error",
    "UsageError",
    "FileError",
    "ModelError",
    "CompileError",
    "VerificationError",
    "ReferenceRuntimeError",
    "BuildError",
    "RunError",
    "InternalError",
    "DEFAULT_TARGETS",
    "__version__",
]

#: GPU architectures :func:`build` targets when not told.
DEFAULT_TARGETS: Tuple[str, ...] = tuple(_detrc.DEFAULT_TARGETS.split(","))

#: What :func:`compile` and :func:`inspect` accept as a model: a path, encoded ONNX bytes,
#: or an ``onnx.ModelProto``.
ModelLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Any]

_ACCEPTED = "a path (str or os.PathLike), bytes, or an onnx.ModelProto"


#: One execution of one pass (``report["steps"]``); ``status`` is "changed", "unchanged",
#: "not-applicable" or "rolled-back". (Functional form: "pass" is a Python keyword.)
PassStep = TypedDict(
    "PassStep",
    {
        "step": int,
        "iteration": int,
        "pass": str,
        "status": str,
        "details": List[str],
        "ops_before": int,
        "ops_after": int,
        "millis": float,
    },
)


class OutputDiff(TypedDict):
    name: str
    max_abs: float
    ok: bool
    note: Optional[str]


class Verification(TypedDict):
    """How the compiled model compared with the original on seeded inputs."""

    seed: int
    outputs: List[OutputDiff]


class BatchRoute(TypedDict):
    """How a dynamic-batch model's batch route went (``report["batch_route"]``): status
    "generalised", or "gave-up" with the node, its operator and the reason (the model was then
    compiled as declared)."""

    status: str
    node: Optional[str]
    op: Optional[str]
    reason: Optional[str]


class CompileReport(TypedDict):
    """What :func:`compile` did; the same fields as ``detrc compile --report``."""

    input: str
    output: Optional[str]
    nodes_before: int
    nodes_after: int
    ops_before: Dict[str, int]
    ops_after: Dict[str, int]
    steps: List[PassStep]
    verification: Optional[Verification]
    had_external_data: bool
    batch_route: Optional[BatchRoute]
    seconds: float


class CompileResult(NamedTuple):
    """``(model, report)``: the compiled model, of the kind given, and the report."""

    model: Any
    report: CompileReport


class PassInfo(TypedDict):
    name: str
    about: str
    detr_specific: bool
    default: bool


def _fail_type(func: str, what: str, accepted: str, value: Any) -> TypeError:
    return TypeError(f"detrc.{func}: {what} must be {accepted}, not {type(value).__name__}")


def _is_model_proto(obj: Any) -> bool:
    # Without importing onnx: whoever holds a ModelProto has imported it already.
    onnx = sys.modules.get("onnx")
    return onnx is not None and isinstance(obj, onnx.ModelProto)


def _model_input(func: str, model: Any) -> Tuple[str, Any]:
    """("path", Path) | ("bytes", bytes) | ("proto", bytes); TypeError for anything else."""
    if isinstance(model, (str, os.PathLike)):
        p = os.fspath(model)
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        return "path", Path(p)
    if isinstance(model, bytes):
        return "bytes", model
    if isinstance(model, (bytearray, memoryview)):
        return "bytes", bytes(model)
    if _is_model_proto(model):
        # A ModelProto past 2 GiB cannot be serialized (a protobuf limit): use a path then.
        return "proto", model.SerializeToString()
    raise _fail_type(func, "model", _ACCEPTED, model)


def _path_or_none(func: str, name: str, value: Any) -> Optional[Path]:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return Path(os.fsdecode(os.fspath(value)))
    raise _fail_type(func, name, "a path (str or os.PathLike) or None", value)


def _names(func: str, name: str, value: Any) -> Optional[List[str]]:
    """A list of names, a comma-separated string (as on the command line), or None."""
    if value is None:
        return None
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _fail_type(func, name, "a list of strings, a comma-separated string, or None", value)


def _bool(func: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail_type(func, name, "True or False", value)
    return value


def _precision(func: str, value: Any) -> Optional[str]:
    if value is not None and not isinstance(value, str):
        raise _fail_type(func, "precision", '"fp32", "fp16", "int8", "fp8" or None', value)
    return value


def _int(func: str, name: str, value: Any, *, minimum: int = 0, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail_type(func, name, "an int" + (" or None" if optional else ""), value)
    if value < minimum:
        raise UsageError(f"{name}={value}: must be at least {minimum}")
    return value


def _float(func: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail_type(func, name, "a number", value)
    if not value >= 0:
        raise UsageError(f"{name}={value}: must be a number >= 0")
    return float(value)


def compile(
    model: ModelLike,
    *,
    output: Union[str, "os.PathLike[str]", None] = None,
    passes: Union[Sequence[str], str, None] = None,
    skip: Union[Sequence[str], str, None] = None,
    gridsample: str = "keep",
    verify: bool = False,
    batch: Union[int, str, None] = None,
    input_shapes: Optional[Mapping[str, Dims]] = None,
    verify_batches: Sequence[int] = (1, 3),
    seed: int = 0,
    verify_runs: int = 1,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    strict: bool = False,
    max_iterations: int = 8,
    max_steps: Optional[int] = None,
    fold_budget: int = 1 << 20,
    external_data: str = "auto",
    dump_ir: Union[str, "os.PathLike[str]", None] = None,
    base_dir: Union[str, "os.PathLike[str]", None] = None,
    precision: Optional[str] = None,
    calibration: Union[str, "os.PathLike[str]", None] = None,
    fp16_keep: Union[Sequence[str], str, None] = None,
    fp16_guard: bool = True,
) -> CompileResult:
    """Compile a DETR-family ONNX model: what ``detrc compile`` does, in this process.

    Args:
        model: the model, as a path (``str`` or ``os.PathLike``), encoded ONNX ``bytes``, or
            an ``onnx.ModelProto``. The result is of the same kind: a ``ModelProto`` for a
            ``ModelProto``, ``bytes`` for bytes, and for a path the ``pathlib.Path`` of
            ``output`` (which a path input requires).
        output: also write the compiled model to this file (atomically; nothing is written
            on an error or a failed verification).
        passes: run only these passes, in this order (names from :func:`passes`; a list or a
            comma-separated string). ``None``: the default pipeline.
        skip: leave these passes out.
        gridsample: ``"keep"`` (default) or ``"gather"``: rewrite bilinear GridSample as a
            gather of the four neighbours, for TensorRT 10.14/11.1, which miscompile
            GridSample (NVIDIA/TensorRT#4813).
        verify: run the original and the compiled model on seeded random inputs with the CPU
            reference runtime; on a mismatch raise :class:`VerificationError` (nothing is
            returned or written). The figures are in ``report["verification"]``.
        batch: ``"dynamic"`` makes the batch symbolic, generalising batch-baked shapes and
            per-image constants (``compile --batch dynamic``); an int makes it static at that
            size; ``None`` keeps the model's: a symbolic batch is compiled at the batch the
            model was traced at and generalised again (the shape arithmetic around it folds;
            if that fails, or its verification does, the model is compiled as declared);
            ``"plain"`` compiles it as declared (``compile --plain-batch``).
            ``report["batch"]`` says what changed.
        input_shapes: fix input shapes before the passes run, ``{name: dims}`` with dims a
            sequence of ints or ``"1x3x800x800"`` (``compile --input-shape``), so all static
            folding applies.
        verify_batches: batch sizes ``verify`` runs a dynamic-batch result at.
        seed: seed of the first verification input set; run ``i`` uses ``seed + i``.
        verify_runs: how many seeded input sets to verify with.
        atol, rtol: verification tolerance: ``|a - b| <= atol + rtol * |a|``.
        strict: fail when a DETR pass does not apply or a pass has to be rolled back.
        max_iterations: rounds of the pipeline at most (it stops at a fixed point).
        max_steps: stop after this many pass executions (to bisect a bad rewrite).
        fold_budget: bytes a folded constant may take beyond the constants it replaces.
        external_data: for ``output``: ``"auto"`` (weights in ``<output>.data`` only past
            2 GiB), ``"always"`` or ``"never"``.
        dump_ir: write the IR as text into this folder before the first pass and after every
            change.
        base_dir: where external data files of an in-memory model are (default: the current
            directory). A path input finds them beside the file.
        precision: ``None`` (as compiled), ``"fp32"``, ``"fp16"``, ``"int8"`` or ``"fp8"``:
            the strongly typed model TensorRT 10/11 builds as it is (``compile --precision``).
            fp16 is checked under emulated fp16 storage; operators that overflow are kept in
            fp32 (``fp16_guard``); a model that still loses detections raises
            :class:`VerificationError`. int8/fp8 need ``calibration``.
            ``report["precision"]`` has the check and the ``trtexec`` command line.
        calibration: a folder of images: int8/fp8 calibration (as ``detrc quantize``), and the
            inputs of the fp16 check (seeded random inputs without it).
        fp16_keep: op types, node names or tensor names kept in fp32 on top of the defaults.
        fp16_guard: keep overflowing operators in fp32 automatically (``False``:
            ``compile --no-fp16-guard``).

    Returns:
        ``CompileResult(model, report)``, a named tuple. ``report`` is a plain ``dict``:
        ``nodes_before``/``nodes_after`` (operator counts), ``ops_before``/``ops_after``
        (op type -> count), ``steps`` (one dict per pass execution: ``step``, ``iteration``,
        ``pass``, ``status``, ``details``, ``ops_before``, ``ops_after``, ``millis``),
        ``verification`` (``None`` unless ``verify``), ``seconds``, ``input``, ``output``,
        ``had_external_data``, ``batch_route`` (``None`` unless the model's batch is dynamic:
        ``status`` "generalised", or "gave-up" with ``node``, ``op``, ``reason``).

    Raises:
        TypeError: an argument of the wrong type (the message says what is accepted).
        UsageError: an unknown pass name or an invalid option value.
        FileError: a file cannot be read or written.
        ModelError: the input is not a usable ONNX model.
        VerificationError: ``verify=True`` and the outputs differ.
        CompileError, ReferenceRuntimeError, InternalError: see docs/python.md.
    """
    f = "compile"
    kind, data = _model_input(f, model)
    out = _path_or_none(f, "output", output)
    if kind == "path" and out is None:
        raise UsageError(
            "detrc.compile: a model given as a path is compiled to a file: pass output=..., "
            "or pass the model as bytes or an onnx.ModelProto to get it back in memory"
        )
    if batch is None or batch in ("dynamic", "plain"):
        batch_opt = batch
    elif isinstance(batch, str):
        raise UsageError(
            f'detrc.compile: batch={batch!r}: use "dynamic", "plain", a size or None'
        )
    else:
        batch_opt = str(_int(f, "batch", batch, minimum=1))
    shapes_opt = []
    if input_shapes is not None:
        if not isinstance(input_shapes, Mapping):
            raise _fail_type(f, "input_shapes", "a dict {input name: dims} or None", input_shapes)
        for name, dims in input_shapes.items():
            if not isinstance(name, str):
                raise _fail_type(f, "input_shapes", "a dict with str keys", name)
            shape = _dims(name, dims, func=f, arg="input_shapes")
            shapes_opt.append(f"{name}:" + "x".join(str(d) for d in shape))
    if isinstance(verify_batches, (str, bytes)) or not isinstance(verify_batches, Sequence):
        raise _fail_type(f, "verify_batches", "a sequence of ints", verify_batches)
    vb = [_int(f, "verify_batches", b, minimum=1) for b in verify_batches]
    if not isinstance(external_data, str):
        raise _fail_type(f, "external_data", '"auto", "always" or "never"', external_data)
    if not isinstance(gridsample, str):
        raise _fail_type(f, "gridsample", '"keep" or "gather"', gridsample)
    options = {
        "passes": _names(f, "passes", passes),
        "skip": _names(f, "skip", skip) or [],
        "gridsample": gridsample,
        "verify": _bool(f, "verify", verify),
        "seed": _int(f, "seed", seed),
        "verify_runs": _int(f, "verify_runs", verify_runs, minimum=1),
        "atol": _float(f, "atol", atol),
        "rtol": _float(f, "rtol", rtol),
        "strict": _bool(f, "strict", strict),
        "max_iterations": _int(f, "max_iterations", max_iterations, minimum=1),
        "max_steps": _int(f, "max_steps", max_steps, optional=True),
        "fold_budget": _int(f, "fold_budget", fold_budget),
        "external_data": external_data,
        "dump_ir": _path_or_none(f, "dump_ir", dump_ir),
        "output": out,
        "base_dir": _path_or_none(f, "base_dir", base_dir),
        "return_bytes": kind != "path",
        "batch": batch_opt,
        "input_shapes": shapes_opt,
        "verify_batches": vb,
        "precision": _precision(f, precision),
        "calibration": _path_or_none(f, "calibration", calibration),
        "fp16_keep": _names(f, "fp16_keep", fp16_keep) or [],
        "fp16_guard": _bool(f, "fp16_guard", fp16_guard),
    }
    if kind == "path":
        encoded, report_json = _detrc.compile(data, None, "", options)
    else:
        label = "<bytes>" if kind == "bytes" else "<onnx.ModelProto>"
        encoded, report_json = _detrc.compile(None, data, label, options)
    report: CompileReport = json.loads(report_json)
    if kind == "path":
        result: Any = out
    elif kind == "bytes":
        result = encoded
    else:
        result = type(model)()
        result.ParseFromString(encoded)
    return CompileResult(result, report)


def inspect(
    model: ModelLike, *, base_dir: Union[str, "os.PathLike[str]", None] = None
) -> Dict[str, Any]:
    """Describe a model, or an engine built by :func:`build` (from its ``.json`` sidecar).

    Args:
        model: a path, encoded ONNX ``bytes`` or an ``onnx.ModelProto``; a path to an engine
            (``.engine``, ``.plan``, ``.trt``, or any file with a sidecar) describes the engine.
        base_dir: where external data of an in-memory model is.

    Returns:
        For a model: ``{"kind": "model", "model", "opset", "nodes", "inputs": [{"name",
        "type"}], "outputs": [...], "ops": {op type: count}}`` (``detrc inspect --json``).
        For an engine: ``{"kind": "engine", ...the sidecar..., "engine_check"}``.

    Raises:
        TypeError, FileError, ModelError: as for :func:`compile`.
    """
    f = "inspect"
    kind, data = _model_input(f, model)
    bd = _path_or_none(f, "base_dir", base_dir)
    if kind == "path":
        text = _detrc.inspect(data, None, "", bd)
    else:
        label = "<bytes>" if kind == "bytes" else "<onnx.ModelProto>"
        text = _detrc.inspect(None, data, label, bd)
    out: Dict[str, Any] = json.loads(text)
    return out


Dims = Union[Sequence[int], str]


def _dims(name: str, value: Any, func: str = "build", arg: str = "shapes") -> List[int]:
    if isinstance(value, str):
        try:
            return [int(d) for d in value.replace("X", "x").replace(",", "x").split("x")]
        except ValueError:
            raise UsageError(f"{arg}[{name!r}]: {value!r} is not dims like 1x3x800x800") from None
    if isinstance(value, (list, tuple)) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in value
    ):
        return list(value)
    raise _fail_type(func, f"{arg}[{name!r}] entries", "sequences of ints or 'AxBxC'", value)


def build(
    model: ModelLike,
    output: Union[str, "os.PathLike[str]"],
    *,
    target: Union[Sequence[str], str, None] = None,
    precision: Optional[str] = None,
    fp16_keep: Union[Sequence[str], str, None] = None,
    gridsample: str = "keep",
    shapes: Optional[Mapping[str, Tuple[Dims, Dims, Dims]]] = None,
    workspace: Optional[int] = None,
    opt_level: Optional[int] = None,
    tensorrt_dir: Union[str, "os.PathLike[str]", None] = None,
    calibration: Union[str, "os.PathLike[str]", None] = None,
    method: str = "mse",
    percentile: float = 99.99,
    max_images: Optional[int] = None,
    resize: str = "torch",
) -> Dict[str, Any]:
    """Build a TensorRT-RTX engine from a model: what ``detrc build`` does, in this process.

    No GPU is needed: engines are compiled ahead of time for the target GPUs. A model not
    compiled by detrc yet goes through the default :func:`compile` pipeline first.

    Args:
        model: a path, bytes or an ``onnx.ModelProto`` (in-memory models are written to a
            temporary file first; the sidecar's ``source.path`` then names that file).
        output: where to write the engine; its description goes to ``<output>.json``.
        target: GPU architectures (``"sm80"``, ``"sm86"``, ``"sm89"``, ``"sm120"``,
            ``"sm121"``; also ``"86"``, ``"8.6"``); default :data:`DEFAULT_TARGETS`.
        precision: ``None`` (default): what the model computes in, its Q/DQ nodes or fp16
            compute, else fp32; or ``"fp32"``, ``"fp16"`` (the model goes through the ``to-fp16`` pass;
            inputs and outputs stay fp32) or ``"int8"`` (explicit Q/DQ: a model without them
            is calibrated on ``calibration`` images and quantized first, as ``detrc quantize``).
        fp16_keep: op types or node names kept in fp32 on top of ``to-fp16``'s defaults.
        gridsample: ``"keep"`` or ``"gather"``, as for :func:`compile`.
        shapes: shape ranges of dynamic inputs, ``{name: (min, opt, max)}``, each dims a
            sequence of ints or a string like ``"1x3x800x800"``.
        workspace: builder workspace limit in MiB.
        opt_level: builder optimization level 0..5.
        tensorrt_dir: folder with the TensorRT-RTX libraries (else ``$DETRC_TENSORRT_DIR``,
            else the system loader path). One process loads one TensorRT-RTX.
        calibration: folder of calibration images (JPEG/PNG) for ``precision="int8"``.
        method: how activation ranges are chosen: ``"mse"``, ``"max"``, ``"percentile"``
            or ``"entropy"`` (see docs/int8.md).
        percentile: the percentile of ``|x|`` that ``method="percentile"`` keeps.
        max_images: calibrate on at most this many images (the first by file name).
        resize: how calibration images are resized: ``"torch"`` (bilinear, no antialiasing)
            or ``"pil"`` (PIL's antialiased bilinear), as ``detrc run --resize``.

    Returns:
        The engine's sidecar as a dict (``detrc build --json``): inputs, outputs, targets,
        precision, TensorRT version, source and engine sha256, timing, steps, warnings.

    Raises:
        TypeError, UsageError, FileError, ModelError: as for :func:`compile`.
        BuildError: TensorRT-RTX is missing, rejects the model or fails to build.
    """
    f = "build"
    kind, data = _model_input(f, model)
    out = _path_or_none(f, "output", output)
    if out is None:
        raise _fail_type(f, "output", "a path (str or os.PathLike)", output)
    targets = _names(f, "target", target) or list(DEFAULT_TARGETS)
    if precision is not None and not isinstance(precision, str):
        raise _fail_type(f, "precision", '"fp32", "fp16", "int8", "fp8" or None', precision)
    if not isinstance(method, str):
        raise _fail_type(f, "method", '"mse", "max", "percentile" or "entropy"', method)
    if not isinstance(resize, str):
        raise _fail_type(f, "resize", '"torch" or "pil"', resize)
    profiles = []
    if shapes is not None:
        if not isinstance(shapes, Mapping):
            raise _fail_type(f, "shapes", "a dict {input name: (min, opt, max)} or None", shapes)
        for name, rng in shapes.items():
            if not isinstance(name, str) or not isinstance(rng, (list, tuple)) or len(rng) != 3:
                raise _fail_type(f, "shapes", "a dict {input name: (min, opt, max)}", rng)
            profiles.append((name, *(_dims(name, d) for d in rng)))
    options = {
        "target": targets,
        "precision": precision,
        "fp16_keep": _names(f, "fp16_keep", fp16_keep) or [],
        "gridsample": gridsample,
        "shapes": profiles,
        "workspace": _int(f, "workspace", workspace, optional=True),
        "opt_level": _int(f, "opt_level", opt_level, optional=True),
        "tensorrt_dir": _path_or_none(f, "tensorrt_dir", tensorrt_dir),
        "calibration": _path_or_none(f, "calibration", calibration),
        "method": method,
        "percentile": _float(f, "percentile", percentile),
        "max_images": _int(f, "max_images", max_images, optional=True),
        "resize": resize,
    }
    if kind == "path":
        text = _detrc.build(data, out, options)
    else:
        with tempfile.TemporaryDirectory(prefix="detrc-build-") as tmp:
            src = Path(tmp) / "model.onnx"
            src.write_bytes(data)
            text = _detrc.build(src, out, options)
    sidecar: Dict[str, Any] = json.loads(text)
    return sidecar


def run(
    model: Union[str, "os.PathLike[str]"],
    images: Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]],
    output: Union[str, "os.PathLike[str]"],
    *,
    threshold: float = 0.7,
    decode: Optional[str] = None,
    normalize: Optional[str] = None,
    resize: str = "torch",
    top_k: Optional[int] = None,
    labels: Optional[str] = None,
    backend: Optional[str] = None,
    batch: Optional[int] = None,
    input_size: Optional[Tuple[int, int]] = None,
    tensorrt_dir: Union[str, "os.PathLike[str]", None] = None,
) -> Dict[str, Any]:
    """Detect objects on images: what ``detrc run`` does, in this process.

    Writes ``output/detections.json`` (COCO-style boxes, and COCO RLE ``segmentation`` masks
    for models with a mask output) and one annotated PNG per image (docs/run.md).

    Args:
        model: an ONNX file (CPU backend) or a TensorRT-RTX engine.
        images: image files or folders (their ``*.jpg``, ``*.jpeg``, ``*.png``, by name).
        output: the output folder.
        threshold: keep detections scoring at least this (0..1).
        decode: ``"softmax"``, ``"sigmoid"``, ``"graph"``; ``None``: chosen from the model.
        normalize: ``"imagenet"`` or ``"none"``; ``None``: by decode.
        resize: ``"torch"`` (bilinear, no antialiasing: GPU pipelines, RF-DETR) or ``"pil"``
            (PIL's antialiased bilinear: transformers' processors, the official PIL pipelines).
        top_k: sigmoid: (query, class) pairs kept per image; graph: the first k.
        labels: ``"coco"`` or a file with one class name per line; ``None``: automatic.
        backend: ``"cpu"``, ``"onnxruntime"``, ``"tract"`` or ``"tensorrt"``; ``None``: cpu for
            ``*.onnx``, tensorrt otherwise.
        batch: images per inference for a dynamic batch (default 1).
        input_size: ``(height, width)`` for a model with a dynamic image size.
        tensorrt_dir: folder with the TensorRT-RTX libraries.

    Returns:
        The ``detrc run --json`` summary: backend, decode, normalize, resize, images,
        detections, batches, timings, the detections file, the mask output (or None) and
        warnings (e.g. a mask output of an unknown layout, run boxes only).

    Raises:
        TypeError, UsageError, FileError, ModelError: as for :func:`compile`.
        RunError: no CUDA driver, or CUDA / TensorRT failed.
    """
    f = "run"
    m = _path_or_none(f, "model", model)
    if m is None:
        raise _fail_type(f, "model", "a path (str or os.PathLike)", model)
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if not isinstance(images, Sequence) or not all(
        isinstance(i, (str, os.PathLike)) for i in images
    ):
        raise _fail_type(f, "images", "a path or a sequence of paths", images)
    out = _path_or_none(f, "output", output)
    if out is None:
        raise _fail_type(f, "output", "a path (str or os.PathLike)", output)
    for name, value in (("decode", decode), ("normalize", normalize), ("labels", labels),
                        ("backend", backend)):
        if value is not None and not isinstance(value, str):
            raise _fail_type(f, name, "a string or None", value)
    if not isinstance(resize, str):
        raise _fail_type(f, "resize", '"torch" or "pil"', resize)
    if input_size is not None and not (
        isinstance(input_size, (tuple, list)) and len(input_size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in input_size)
    ):
        raise _fail_type(f, "input_size", "a (height, width) pair of ints or None", input_size)
    options = {
        "threshold": _float(f, "threshold", threshold),
        "decode": decode,
        "normalize": normalize,
        "resize": resize,
        "top_k": _int(f, "top_k", top_k, optional=True),
        "labels": labels,
        "backend": backend,
        "batch": _int(f, "batch", batch, optional=True),
        "input_size": tuple(input_size) if input_size is not None else None,
        "tensorrt_dir": _path_or_none(f, "tensorrt_dir", tensorrt_dir),
    }
    text = _detrc.run(m, [Path(i) for i in images], out, options)
    summary: Dict[str, Any] = json.loads(text)
    return summary


def passes() -> List[PassInfo]:
    """Every pass in default pipeline order (``detrc passes``).

    Returns:
        ``[{"name", "about", "detr_specific", "default"}, ...]``; ``default`` is False for
        the opt-in passes that are not in the default pipeline.
    """
    return [
        PassInfo(name=n, about=a, detr_specific=d, default=dflt)
        for (n, a, d, dflt) in _detrc.passes()
    ]
