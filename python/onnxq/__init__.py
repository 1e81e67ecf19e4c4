"""onnxq: quantize ONNX models from Python.

The same compiler as the ``onnxq`` command (a Rust core, called in-process
with the GIL released): for the same model, data and options,
``onnxq.quantize`` writes the very file ``onnxq quantize`` writes.

Quick start::

    import onnxq
    report = onnxq.quantize("model.onnx", "model.int8.onnx", calib="samples/")
    print(report.summary)
    print(report.sqnr_db, report.size_ratio)

Calibration data may be a directory of ``.npz``/``.npy`` samples, a list or
iterator of ``{input name: numpy array}`` dicts, or an onnxruntime
``CalibrationDataReader`` (anything with ``get_next()``), so a script using
``onnxruntime.quantization.quantize_static(model_input, model_output,
calibration_data_reader)`` switches by changing the import and the call to
``onnxq.quantize(model_input, model_output, calibration_data_reader)``.

Functions: :func:`quantize`, :func:`calibrate`, :func:`validate`,
:func:`profile`, :func:`inspect`. Failures raise :class:`BadInputError`
(bad model, data or option; the CLI's exit code 2) or
:class:`CheckFailedError` (a validation threshold missed; exit code 1),
both :class:`OnnxqError`, carrying the CLI's message.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

from . import _onnxq

__version__: str = _onnxq.__version__

__all__ = [
    "quantize",
    "calibrate",
    "validate",
    "profile",
    "inspect",
    "Report",
    "Result",
    "OnnxqError",
    "BadInputError",
    "CheckFailedError",
]

#: A model: a path, the bytes of an ONNX file, or an ``onnx.ModelProto``
#: (anything with ``SerializeToString()``; the ``onnx`` package is not
#: needed otherwise).
ModelLike = Union[str, "os.PathLike[str]", bytes, Any]
#: Samples: a directory, an iterable of ``{input name: array}`` dicts, or an
#: object with onnxruntime's ``CalibrationDataReader`` interface.
DataLike = Union[str, "os.PathLike[str]", Iterable[Mapping[str, Any]], Any]
#: ``progress(what, done, total)``, called after every step of the long
#: loops (calibration, sensitivity, weight rounding) from Rust's threads.
ProgressCallback = Callable[[str, int, int], Any]


class OnnxqError(Exception):
    """An onnxq command failed. ``code`` is the exit code the ``onnxq``
    command gives for it; ``message`` what it prints."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class BadInputError(OnnxqError, ValueError):
    """Bad input: the model, the data, a statistics or selection file, or an
    option (exit code 2). The message names the file, node or tensor and
    what to do."""


class CheckFailedError(OnnxqError):
    """A check failed (exit code 1): ``validate(..., min_sqnr=...)`` below
    its threshold. ``result`` holds the measurements."""

    def __init__(self, message: str, code: int, result: "Result") -> None:
        super().__init__(message, code)
        self.result = result


class Result:
    """What a command measured: ``to_dict()`` is its JSON (as the CLI's
    ``--json`` prints it), ``text`` the table the CLI prints for people, and
    the top-level keys read as attributes (``result.validation``)."""

    def __init__(self, data: Any, text: str) -> None:
        self._data = data
        self.text: str = text

    def to_dict(self) -> Dict[str, Any]:
        """A deep copy of the result as plain Python data."""
        return json.loads(json.dumps(self._data))

    def __getattr__(self, name: str) -> Any:
        data = self.__dict__.get("_data")
        if isinstance(data, dict) and name in data:
            return data[name]
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def keys(self) -> List[str]:
        return list(self._data.keys()) if isinstance(self._data, dict) else []

    def __dir__(self) -> List[str]:
        return sorted(set(super().__dir__()) | set(self.keys()))

    @property
    def sqnr_db(self) -> Optional[float]:
        """The worst output SQNR (dB) of the validation, if there was one."""
        return _worst(self._validation(), "sqnr_db")

    @property
    def cosine(self) -> Optional[float]:
        """The worst output's mean cosine similarity, if validated."""
        return _worst(self._validation(), "cosine_mean")

    def _validation(self) -> Optional[Dict[str, Any]]:
        if isinstance(self._data, dict):
            v = self._data.get("validation")
            return v if isinstance(v, dict) else None
        return None

    def __repr__(self) -> str:
        return f"<onnxq.{type(self).__name__} {sorted(self.keys())}>"

    def __str__(self) -> str:
        return self.text or json.dumps(self._data, indent=2)


class Report(Result):
    """The quantize report: what was quantized and how, the validation
    against the float model, sizes, timings and warnings. ``summary`` is the
    text the CLI prints; ``to_dict()`` the JSON ``--report FILE.json``
    writes."""

    @property
    def summary(self) -> str:
        return self.text

    @property
    def size_ratio(self) -> float:
        """Written file bytes over float file bytes."""
        return self._data["quantized_bytes"] / max(1, self._data["float_bytes"])

    def __repr__(self) -> str:
        d = self._data
        quantized = sum(1 for n in d.get("nodes", []) if n.get("quantized"))
        parts = [f"{d['input']} -> {d['output']}", d["method"]]
        if d.get("nodes"):
            parts.append(f"{quantized} of {len(d['nodes'])} nodes quantized")
        if self.sqnr_db is not None:
            parts.append(f"SQNR {self.sqnr_db:.2f} dB")
        parts.append(f"{self.size_ratio:.3f}x size")
        return "<onnxq.Report " + "; ".join(parts) + ">"


def _worst(validation: Optional[Dict[str, Any]], key: str) -> Optional[float]:
    if not validation:
        return None
    values = [o[key] for o in validation.get("outputs", []) if o.get(key) is not None]
    return min(values) if values else None


class _Scratch:
    """A temporary directory for models given as bytes and samples given as
    arrays, removed when the call ends (under ``TMPDIR``)."""

    def __init__(self) -> None:
        self._dir: Optional[str] = None

    def path(self, name: str) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="onnxq-")
        return os.path.join(self._dir, name)

    def __enter__(self) -> "_Scratch":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def _model_path(model: ModelLike, scratch: _Scratch, what: str) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    elif hasattr(model, "SerializeToString"):
        data = model.SerializeToString()
    else:
        raise TypeError(
            f"{what}: expected a path, the bytes of an ONNX file or an onnx.ModelProto, "
            f"not {type(model).__name__}"
        )
    path = scratch.path(f"{what}.onnx")
    with open(path, "wb") as f:
        f.write(data)
    return path


def _samples(data: Any) -> Iterator[Mapping[str, Any]]:
    """The samples of an iterable of dicts or of a CalibrationDataReader."""
    if hasattr(data, "get_next"):
        while True:
            sample = data.get_next()
            if sample is None:
                return
            yield sample
    else:
        yield from data


def _data_dir(data: DataLike, scratch: _Scratch, what: str) -> str:
    """A directory holding the samples: the one given, or one each sample is
    written to as an .npz file as it arrives (memory does not grow with the
    number of samples; the Rust core reads them one at a time too)."""
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    if isinstance(data, Mapping):
        raise TypeError(
            f"{what}: a single dict is one sample; pass a list of samples, an iterator "
            "or a CalibrationDataReader"
        )
    if not (hasattr(data, "get_next") or isinstance(data, Iterable)):
        raise TypeError(
            f"{what}: expected a directory, an iterable of {{input name: array}} dicts or "
            f"an object with get_next(), not {type(data).__name__}"
        )
    import numpy as np

    directory = scratch.path(what)
    os.makedirs(directory)
    count = 0
    for sample in _samples(data):
        if not isinstance(sample, Mapping):
            raise TypeError(
                f"{what}: sample {count} is a {type(sample).__name__}; expected a dict "
                "of input name -> array"
            )
        arrays = {str(k): np.asarray(v) for k, v in sample.items()}
        # Names sort in arrival order: the core reads files sorted by name.
        with open(os.path.join(directory, f"{count:09d}.npz"), "wb") as f:
            np.savez(f, **arrays)
        count += 1
    if count == 0:
        raise BadInputError(f"{what}: the data gave no samples", 2)
    return directory


def _run(argv: List[str], progress: Union[None, bool, ProgressCallback], kind: type = Result) -> Result:
    callback = progress if callable(progress) else None
    if not progress:
        argv.append("--quiet")
    code, message, payload, text = _onnxq.run(["onnxq", *argv], callback)
    data = json.loads(payload)
    if code == 0:
        return kind(data, text)
    if code == 1:
        raise CheckFailedError(message, code, kind(data, text))
    raise BadInputError(message, code)


class _Args:
    """Builds a command line; ``None`` and ``False`` leave a flag out."""

    def __init__(self, *positional: str) -> None:
        self.argv: List[str] = list(positional)

    def opt(self, flag: str, value: Any) -> None:
        if value is None or value is False:
            return
        if value is True:
            self.argv.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                self.argv += [flag, _text(v)]
        else:
            self.argv += [flag, _text(value)]


def _text(v: Any) -> str:
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return str(v)


def _shapes(input_shapes: Optional[Mapping[str, Sequence[int]]]) -> Optional[List[str]]:
    if not input_shapes:
        return None
    return [f"{name}={','.join(str(int(d)) for d in dims)}" for name, dims in input_shapes.items()]


# onnxruntime.quantization.quantize_static's keywords that mean what an
# onnxq option means, so a call switches by changing its name.
def _from_onnxruntime(kw: Dict[str, Any], opts: Dict[str, Any]) -> None:
    def name_of(v: Any) -> str:
        return str(getattr(v, "name", v))

    qtypes = {"qint8": "s8", "quint8": "u8", "qint16": "s16", "quint16": "u16"}
    for key in list(kw):
        value = kw.pop(key)
        if key == "nodes_to_exclude":
            opts["exclude"] = list(opts.get("exclude") or []) + list(value or [])
        elif key == "op_types_to_quantize":
            opts["op_types"] = list(value) if value else None
        elif key in ("activation_type", "weight_type"):
            t = qtypes.get(name_of(value).lower(), name_of(value).lower())
            opts["activations" if key == "activation_type" else "weights"] = t
        elif key == "calibrate_method":
            m = name_of(value).lower()
            if m == "distribution":
                raise BadInputError(
                    "calibrate_method=Distribution: onnxq's methods are auto (default), minmax, "
                    "percentile, entropy and mse",
                    2,
                )
            opts["method"] = m
        elif key == "use_external_data_format":
            opts["external_data"] = 1024 if value else None
        elif key == "quant_format":
            if name_of(value).lower() != "qdq":
                raise BadInputError(
                    "quant_format=QOperator: onnxq writes QDQ for onnxruntime; for "
                    "QLinearConv/QLinearMatMul (what tract runs in integers) pass target='tract'",
                    2,
                )
        elif key == "nodes_to_quantize":
            if value:
                raise BadInputError(
                    "nodes_to_quantize: onnxq chooses nodes by measured speed and accuracy; keep "
                    "nodes float with exclude=[...] or limit op types with op_types=[...]",
                    2,
                )
        elif key == "extra_options":
            if value:
                raise BadInputError(
                    f"extra_options {sorted(value)}: onnxruntime's extra options have no onnxq "
                    "meaning; see help(onnxq.quantize) for its options",
                    2,
                )
        else:
            raise TypeError(f"quantize() got an unexpected keyword argument {key!r}")


def quantize(
    model: ModelLike,
    output: Union[str, "os.PathLike[str]"],
    calib: Optional[DataLike] = None,
    *,
    mode: str = "static",
    target: str = "ort-cpu",
    method: str = "auto",
    exclude: Sequence[str] = (),
    op_types: Optional[Sequence[str]] = None,
    target_sqnr: Optional[float] = None,
    target_cosine: Optional[float] = None,
    report: Union[None, str, "os.PathLike[str]"] = None,
    val: Optional[DataLike] = None,
    val_samples: Optional[int] = None,
    calib_limit: Optional[int] = None,
    calib_random: Optional[int] = None,
    per_channel: Optional[bool] = None,
    activations: Optional[str] = None,
    weights: Optional[str] = None,
    bits: Optional[int] = None,
    block_size: Optional[int] = None,
    symmetric: bool = False,
    format: Optional[str] = None,
    storage_only: bool = False,
    codebook: Optional[str] = None,
    codebook_tables: Optional[str] = None,
    prune: Union[None, float, str] = None,
    prune_channels: Union[None, float, str] = None,
    scales: Optional[str] = None,
    smooth: Union[None, str, float] = None,
    equalize: Optional[str] = None,
    rounding: Optional[str] = None,
    bias_correction: bool = True,
    reduce_range: bool = False,
    speed_select: bool = True,
    coverage: Optional[float] = None,
    promote: Optional[int] = None,
    stats: Union[None, str, "os.PathLike[str]"] = None,
    save_stats: Union[None, str, "os.PathLike[str]"] = None,
    selection: Union[None, str, "os.PathLike[str]"] = None,
    save_selection: Union[None, str, "os.PathLike[str]"] = None,
    fix_input: Optional[Mapping[str, Any]] = None,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    external_data: Union[None, bool, int] = None,
    in_place: bool = False,
    threads: Optional[int] = None,
    max_memory: Union[None, str, int] = None,
    ort_lib: Union[None, str, "os.PathLike[str]"] = None,
    progress: Union[None, bool, ProgressCallback] = None,
    **onnxruntime_options: Any,
) -> Report:
    """Quantize ``model`` and write the result to ``output``; returns the
    :class:`Report` (what ``onnxq quantize`` prints and ``--report`` saves).

    The options are the command's (``onnxq quantize --help``), with ``_`` for
    ``-``; ``None`` leaves the command's default. The main ones:

    model
        A path, the bytes of an ONNX file, or an ``onnx.ModelProto``.
    output
        Where to write the quantized model (written whole or not at all; the
        input is never overwritten unless ``in_place=True``).
    calib
        Calibration samples: a directory of ``.npz``/``.npy`` files, a list or
        iterator of ``{input name: numpy array}`` dicts, or an onnxruntime
        ``CalibrationDataReader``. Arrays are streamed to a temporary
        directory one sample at a time, so memory does not grow with their
        number.
    mode
        ``static`` (int8 with calibration), ``dynamic``, ``weights``
        (weight-only, ``bits=8|4``), ``f16``, ``bf16``, ``codebook``.
    target
        The runtime the file is for: ``ort-cpu`` (onnxruntime CPU),
        ``tract``, ``portable``.
    method
        Clip range: ``auto`` (chosen per tensor), ``minmax``, ``percentile``,
        ``entropy``, ``mse``.
    exclude
        Node names or op types kept float (``*`` globs).
    target_sqnr, target_cosine
        Automatic fallback: keep the most sensitive nodes float until the
        validation meets this.
    report
        Also write the report: ``.html`` for people, ``.json`` for machines.
    prune, prune_channels
        Magnitude pruning (dB per layer, or ``"auto"``) for a smaller
        download; structured pruning (a share of the MACs, or ``"auto"``
        with ``target_sqnr``) for a narrower, faster network.
    ort_lib
        The libonnxruntime speed selection times in; by default the one of
        the ``onnxruntime`` package this interpreter has (then
        ``ORT_DYLIB_PATH``, as the command looks).
    progress
        ``None``/``False``: quiet (the default, for notebooks); ``True``: the
        command's progress bars on a terminal's stderr; a callable:
        ``progress(what, done, total)`` after every step.

    onnxruntime's ``quantize_static`` keywords with an onnxq meaning are
    accepted too: ``nodes_to_exclude``, ``op_types_to_quantize``,
    ``per_channel``, ``reduce_range``, ``activation_type``,
    ``weight_type``, ``calibrate_method``, ``use_external_data_format``,
    ``quant_format`` (QDQ), an empty ``extra_options``.

    Raises :class:`BadInputError` with the command's message on bad input.

    Example::

        report = onnxq.quantize("model.onnx", "model.int8.onnx", calib="calib/",
                                target_sqnr=30, report="model.html")
        report.sqnr_db, report.size_ratio, report.pipeline
    """
    opts: Dict[str, Any] = dict(
        exclude=list(exclude),
        op_types=list(op_types) if op_types else None,
        method=method,
        activations=activations,
        weights=weights,
        external_data=external_data,
    )
    _from_onnxruntime(dict(onnxruntime_options), opts)
    with _Scratch() as scratch:
        a = _Args("quantize", _model_path(model, scratch, "model"))
        a.opt("--output", output)
        if calib is not None:
            a.opt("--calib", _data_dir(calib, scratch, "calib"))
        if val is not None:
            a.opt("--val", _data_dir(val, scratch, "val"))
        a.opt("--mode", mode)
        a.opt("--target", target)
        a.opt("--method", opts["method"])
        a.opt("--exclude", opts["exclude"])
        if opts["op_types"]:
            a.opt("--op-types", ",".join(opts["op_types"]))
        a.opt("--target-sqnr", target_sqnr)
        a.opt("--target-cosine", target_cosine)
        a.opt("--report", report)
        a.opt("--val-samples", val_samples)
        a.opt("--calib-limit", calib_limit)
        a.opt("--calib-random", calib_random)
        if per_channel is not None:
            a.opt("--per-channel" if per_channel else "--per-tensor", True)
        a.opt("--activations", opts["activations"])
        a.opt("--weights", opts["weights"])
        a.opt("--bits", bits)
        a.opt("--block-size", block_size)
        a.opt("--symmetric", symmetric)
        a.opt("--format", format)
        a.opt("--storage-only", storage_only)
        a.opt("--codebook", codebook)
        a.opt("--codebook-tables", codebook_tables)
        a.opt("--prune", prune)
        a.opt("--prune-channels", prune_channels)
        a.opt("--scales", scales)
        a.opt("--smooth", smooth)
        a.opt("--equalize", equalize)
        a.opt("--rounding", rounding)
        a.opt("--no-bias-correction", not bias_correction)
        a.opt("--reduce-range", reduce_range)
        a.opt("--no-speed-select", not speed_select)
        a.opt("--coverage", coverage)
        a.opt("--promote", promote)
        a.opt("--stats", stats)
        a.opt("--save-stats", save_stats)
        a.opt("--selection", selection)
        a.opt("--save-selection", save_selection)
        if fix_input:
            a.opt("--fix-input", [f"{k}={_fixed(v)}" for k, v in fix_input.items()])
        a.opt("--input-shape", _shapes(input_shapes))
        ext = opts["external_data"]
        if ext is True:
            a.argv.append("--external-data")
        elif ext not in (None, False):
            a.opt("--external-data", int(ext))
        a.opt("--in-place", in_place)
        a.opt("--threads", threads)
        a.opt("--max-memory", max_memory)
        a.opt("--ort-lib", ort_lib or _onnxruntime_here())
        result = _run(a.argv, progress, Report)
    assert isinstance(result, Report)
    return result


def _onnxruntime_here() -> Optional[str]:
    """The libonnxruntime of the onnxruntime package this interpreter would
    import (found without importing it), for speed selection; ``None`` when
    ``ORT_DYLIB_PATH`` is set (it wins, as on the command line) or there is
    none (the command then looks further)."""
    if os.environ.get("ORT_DYLIB_PATH"):
        return None
    import glob
    import importlib.util

    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for d in spec.submodule_search_locations:
        libs = sorted(glob.glob(os.path.join(d, "capi", "libonnxruntime.so*")))
        if libs:
            return libs[0]
    return None


def _fixed(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def calibrate(
    model: ModelLike,
    calib: DataLike,
    output: Union[str, "os.PathLike[str]"],
    *,
    calib_limit: Optional[int] = None,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    threads: Optional[int] = None,
    progress: Union[None, bool, ProgressCallback] = None,
) -> Result:
    """Run calibration only and save the statistics (histograms) to
    ``output``, for ``quantize(..., stats=output)`` with other options
    without running the model again. Returns the count of tensors and
    samples and the model and data hashes the statistics are tied to."""
    with _Scratch() as scratch:
        a = _Args("calibrate", _model_path(model, scratch, "model"))
        a.opt("--calib", _data_dir(calib, scratch, "calib"))
        a.opt("--output", output)
        a.opt("--calib-limit", calib_limit)
        a.opt("--input-shape", _shapes(input_shapes))
        a.opt("--threads", threads)
        return _run(a.argv, progress)


def validate(
    original: ModelLike,
    quantized: ModelLike,
    data: DataLike,
    *,
    limit: Optional[int] = None,
    min_sqnr: Optional[float] = None,
    min_cosine: Optional[float] = None,
    per_layer: bool = False,
    sensitivity_samples: Optional[int] = None,
    progress: Union[None, bool, ProgressCallback] = None,
) -> Result:
    """Compare ``quantized`` with ``original`` on ``data`` (run in tract):
    per output SQNR, cosine, max error, and with ``per_layer=True`` each
    tensor's SQNR and each quantized node's isolated sensitivity. Raises
    :class:`CheckFailedError` (with ``.result``) below ``min_sqnr`` or
    ``min_cosine``. ``result.sqnr_db`` is the worst output's SQNR."""
    with _Scratch() as scratch:
        a = _Args(
            "validate",
            _model_path(original, scratch, "original"),
            _model_path(quantized, scratch, "quantized"),
        )
        a.opt("--data", _data_dir(data, scratch, "data"))
        a.opt("--limit", limit)
        a.opt("--min-sqnr", min_sqnr)
        a.opt("--min-cosine", min_cosine)
        a.opt("--per-layer", per_layer)
        a.opt("--sensitivity-samples", sensitivity_samples)
        return _run(a.argv, progress)


def profile(
    model: ModelLike,
    data: Optional[DataLike] = None,
    *,
    runs: Optional[int] = None,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
) -> Result:
    """Time every node in tract (median of ``runs``) on the first sample of
    ``data`` (seeded random inputs without it) and rank the hotspots with
    their MACs."""
    with _Scratch() as scratch:
        a = _Args("profile", _model_path(model, scratch, "model"))
        if data is not None:
            a.opt("--data", _data_dir(data, scratch, "data"))
        a.opt("--runs", runs)
        a.opt("--input-shape", _shapes(input_shapes))
        # profile has no --quiet: nothing to silence.
        code, message, payload, text = _onnxq.run(["onnxq", *a.argv], None)
        if code != 0:
            raise BadInputError(message, code)
        return Result(json.loads(payload), text)


def inspect(model: ModelLike, *, ir: bool = False) -> Union[Dict[str, Any], str]:
    """A model's summary as a dict (versions, op histogram, parameters,
    inputs and outputs, compute by precision), or with ``ir=True`` the model
    in onnxq's text IR (ONNX's textual syntax)."""
    with _Scratch() as scratch:
        argv = ["onnxq", "inspect", _model_path(model, scratch, "model")]
        if ir:
            argv.append("--ir")
        code, message, payload, text = _onnxq.run(argv, None)
    if code != 0:
        raise BadInputError(message, code)
    return text if ir else json.loads(payload)
