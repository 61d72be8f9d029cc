"""NetVLAD VGG16 from MatConvNet `.mat` (the "struct" export hloc downloads, `Pitts30K_struct.mat`).

The file is a SimpleNN `net` whose `layers` are structs with `type` and `name`: VGG16 `conv`
(weights {[3, 3, in, out], [out]}, pad 1), `relu`, `pool` (max 2x2, stride 2, pad 0) up to
conv5_3; then `normalize` (preL2), the custom `vlad:core` (weights {assignment [D, K], negated
centres [D, K]}), custom `postL2` and `finalL2` normalisations, the `WPCA` conv (weights
{[K * D, N] (or [1, 1, K * D, N]), [N]}) and a last normalisation. `net.meta.normalization.averageImage`
holds the average colour. Every layer is checked against hierloc's NetVLAD and every weight is used.

The original MatConvNet file stores its custom layers as MATLAB objects, which scipy cannot read:
convert it first with netvlad_tf_open's `matlab/net_class2struct.m` (hloc ships the result).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .common import ConversionError, make_provenance
from .netvlad_common import VGG16_CONV_NAMES, build_netvlad_checkpoint

STRUCTURAL_CUSTOM_LAYERS = ("postL2", "finalL2")


def _field(layer: Any, name: str, default: Any = None) -> Any:
    return getattr(layer, name, default)


def _label(value: Any) -> str:
    """A layer's type or name as one short line (a damaged file can hold any array there)."""
    return " ".join(str(value).split())[:80]


def _weights(layer: Any) -> list[np.ndarray]:
    weights = _field(layer, "weights")
    if weights is None:
        return []
    # Values beyond float32 become infinity, which the state builder refuses with the layer's name.
    with np.errstate(over="ignore"):
        if isinstance(weights, np.ndarray) and weights.dtype == object:
            return [np.asarray(w, dtype=np.float32) for w in weights.reshape(-1)]
        return [np.asarray(weights, dtype=np.float32)]


def load_mat_net(path: str | os.PathLike) -> Any:
    """The `net` struct of a MatConvNet file, with clear errors for the forms scipy cannot read."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .mat file")
    try:
        mat = loadmat(path, struct_as_record=False, squeeze_me=True)
    except NotImplementedError as exc:  # MATLAB v7.3 = HDF5
        raise ConversionError(f"{path}: a MATLAB v7.3 (HDF5) file; save it with -v7 ({exc})") from None
    except (ValueError, TypeError, OSError) as exc:
        raise ConversionError(f"{path}: not a readable MATLAB file ({exc})") from None
    except MemoryError:
        raise ConversionError(f"{path}: declares arrays larger than the memory available (damaged?)") from None
    except Exception as exc:  # scipy raises many types (MatReadError, IndexError, zlib.error...) for damaged files
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise ConversionError(f"{path}: not a readable MATLAB file ({type(exc).__name__}: {first[:200]})") from None
    if "net" not in mat:
        raise ConversionError(f"{path}: no variable 'net' (found {sorted(k for k in mat if not k.startswith('__'))})")
    net = mat["net"]
    layers = _field(net, "layers")
    if layers is None:
        raise ConversionError(f"{path}: 'net' has no 'layers' (a DagNN or another format)")
    if any(not hasattr(layer, "type") for layer in np.atleast_1d(layers)):
        raise ConversionError(f"{path}: layers are MATLAB objects that scipy cannot read; convert the file with "
                              "netvlad_tf_open's matlab/net_class2struct.m first (or use hloc's Pitts30K_struct.mat)")
    return net


def convert_netvlad_mat(source: str | os.PathLike, output: str | os.PathLike, name: str = "netvlad") -> dict[str, Any]:
    """Convert a MatConvNet NetVLAD struct `.mat` into a hierloc `netvlad` checkpoint; returns the provenance."""
    source = Path(source)
    net = load_mat_net(source)
    try:
        return _convert_net(source, net, output, name)
    except ConversionError:
        raise
    except (AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:
        # Fields of the wrong type or shape in a damaged or foreign file.
        raise ConversionError(f"{source}: not the expected NetVLAD structure ({type(exc).__name__}: {exc})") from None


def _convert_net(source: Path, net: Any, output: str | os.PathLike, name: str) -> dict[str, Any]:
    convs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    vlad = whitening = None
    layer_log: list[str] = []
    conv_order = iter(VGG16_CONV_NAMES)
    for i, layer in enumerate(np.atleast_1d(net.layers)):
        kind, lname = _label(layer.type), _label(_field(layer, "name", f"layer{i}"))
        where = f"{source}: layer {i + 1} ({lname}, {kind})"
        weights = _weights(layer)
        if kind == "conv" and lname == "WPCA":
            if len(weights) != 2:
                raise ConversionError(f"{where}: expected weights and bias")
            whitening = (weights[0], weights[1])
        elif kind == "conv":
            expected = next(conv_order, None)
            if expected is None or len(weights) != 2:
                raise ConversionError(f"{where}: unexpected conv (hierloc's NetVLAD is VGG16 to conv5_3)")
            if np.any(np.asarray(_field(layer, "pad", 1)) != 1) or np.any(np.asarray(_field(layer, "stride", 1)) != 1):
                raise ConversionError(f"{where}: VGG16 convs have pad 1 and stride 1")
            convs[expected] = (weights[0].reshape(weights[0].shape[:2] + (-1, weights[1].size)), weights[1])
        elif kind == "relu":
            if float(_field(layer, "leak", 0) or 0) != 0:
                raise ConversionError(f"{where}: leaky ReLU is not supported")
        elif kind == "pool":
            pool = np.atleast_1d(_field(layer, "pool", 2))
            if str(_field(layer, "method", "max")) != "max" or np.any(pool != 2) or \
                    np.any(np.asarray(_field(layer, "stride", 2)) != 2) or \
                    np.any(np.asarray(_field(layer, "pad", 0)) != 0):
                raise ConversionError(f"{where}: only max pooling 2x2, stride 2, pad 0 is supported")
        elif kind == "normalize":
            param = np.asarray(_field(layer, "param", []), dtype=np.float64).reshape(-1)
            if param.size != 4 or param[0] < 2 * 512 or param[2] != 1 or param[3] != 0.5:
                raise ConversionError(f"{where}: only L2 normalisation over the channels is supported (param {param})")
        elif "vlad" in lname.lower():
            if len(weights) != 2:
                raise ConversionError(f"{where}: expected the assignment and the centres")
            vlad = weights
        elif lname not in STRUCTURAL_CUSTOM_LAYERS:
            raise ConversionError(f"{where}: unknown layer")
        layer_log.append(f"{lname}:{kind}" + (f" ({len(weights)} arrays)" if weights else ""))
    if len(convs) != len(VGG16_CONV_NAMES) or vlad is None:
        raise ConversionError(f"{source}: incomplete network: {len(convs)} of 13 VGG16 convs, "
                              f"VLAD layer {'found' if vlad is not None else 'missing'}")
    average = np.asarray(net.meta.normalization.averageImage, dtype=np.float64)
    if average.ndim == 3:  # an average image: the references use its pixel (0, 0)
        flat = average.reshape(-1, 3)
        if not np.allclose(flat, flat[0]):
            raise ConversionError(f"{source}: the average image varies across pixels; hierloc subtracts one colour")
        average = flat[0]
    provenance = make_provenance("netvlad-mat", source, [source], layers=layer_log)
    return build_netvlad_checkpoint(str(source), convs, vlad[0], vlad[1], whitening, average.astype(np.float32),
                                    output, provenance, name=name)
