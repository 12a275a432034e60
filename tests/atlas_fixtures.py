"""Tiny real ONNX explaining models with an intermediate block (and its gradient tail), and tiny phantom atlases, for atlas tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ichviewer.inference.manifest import file_sha256
from inference_fixtures import add_member, build_cnn_onnx, write_manifest

#: Model input of the tiny explaining model (phantoms are generated at PHANTOM_MATRIX).
INPUT = (64, 64)
PHANTOM_MATRIX = 64


def _expose_output(path: Path, tensor: str, channels: int) -> None:
    """Add an intermediate tensor of a built model as an extra graph output (what the training export adds)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    model.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, ["N", channels, None, None]))
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def blood_weights(seed: int = 3) -> dict[str, Any]:
    """Hand-set weights that make the tiny CNN see blood: a blood-window band detector that ignores bone, pooled over 3x3.

    Channels of the input: tissue (W40/L40), brain (W100/L50), blood (W40/L60) windows.
    Block 0, channel 0: relu(blood - 0.2) (blood and bone); channel 1: relu(brain - 0.85)
    (bone only). Last block, channel 0: relu(mean3x3(ch0) - 10 ch1 - 0.05), i.e. blood
    that is not bone, strongest inside a bleed rather than on partial-volume rims. The
    other channels are random (features that mean nothing). Head: SDH and ANY read
    channel 0.
    """
    rng = np.random.default_rng(seed)
    w0 = (rng.standard_normal((6, 3, 3, 3)) * 0.05).astype(np.float32)
    b0 = np.full(6, 0.02, np.float32)
    w0[0] = 0.0
    w0[0, 2, 1, 1] = 1.0
    b0[0] = -0.2
    w0[1] = 0.0
    w0[1, 1, 1, 1] = 1.0
    b0[1] = -0.85
    w1 = (rng.standard_normal((8, 6, 3, 3)) * 0.05).astype(np.float32)
    b1 = np.full(8, 0.01, np.float32)
    w1[0] = 0.0
    w1[0, 0] = 1.0 / 9.0
    w1[0, 1] = -10.0  # anything next to bone is not blood (partial-volume rims of the skull)
    b1[0] = -0.05
    head = (rng.standard_normal((6, 8)) * 0.1).astype(np.float32)
    head[:, 0] = -1.0
    head[2, 0] = 6.0  # SDH
    head[5, 0] = 6.0  # ANY
    bias = np.full(6, -2.0, np.float32)
    return {"conv_weights": [w0, w1], "conv_biases": [b0, b1], "head_weight": head, "head_bias": bias}


def build_explaining_ensemble(directory: str | Path, *, seed: int = 3, with_block: bool = True, extra_member: bool = True, blood: bool = True) -> Path:
    """An ensemble whose explaining member 'explainer' has blocks 'block0' (with a gradient tail) and the last block.

    Two convolutions (6 then 8 channels, the second with stride 2), GAP + linear head;
    'block0' is the first convolution's ReLU output, its tail the second convolution
    plus the head (a separate ONNX model), as the training export would write them.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hand = blood_weights(seed) if blood else {}
    entry, weights = add_member(directory, "explainer", seed=seed, degree=1, input_size=INPUT, strides=(1, 2), widths=(6, 8), **hand)
    if with_block:
        onnx_path = directory / entry["file"]
        _expose_output(onnx_path, "act0", 6)
        entry["sha256"] = file_sha256(onnx_path)
        tail = directory / "explainer_tail_block0.onnx"
        build_cnn_onnx(
            tail,
            input_size=INPUT,
            channels=6,
            conv_weights=[weights["conv_weights"][1]],
            conv_biases=[weights["conv_biases"][1]],
            head_weight=weights["head_weight"],
            head_bias=weights["head_bias"],
            strides=(2,),
            input_name="block",
            features_name="tail_features",
        )
        entry["block_outputs"] = [{"name": "block0", "output": "act0", "tail": {"file": tail.name, "sha256": file_sha256(tail), "input": "block"}}]
    entries = [entry]
    if extra_member:
        other, _ = add_member(directory, "other", seed=seed + 10, degree=1, input_size=INPUT)
        entries.append(other)
    write_manifest(directory, entries, explaining_model="explainer")
    return directory


def phantom_source(seeds: tuple[int, ...] = (1, 2, 3, 4, 5, 6), subtypes: tuple[str, ...] = ("SDH", "IPH", "none")) -> Any:
    from ichviewer.atlas import PhantomSource

    return PhantomSource(seeds, subtypes=subtypes, matrix=PHANTOM_MATRIX)


def forward_numpy(x: np.ndarray, weights: dict[str, Any], strides: tuple[int, ...] = (1, 2)) -> list[np.ndarray]:
    """Reference forward pass of `build_cnn_onnx` models in numpy (for gradient checks): the ReLU output per layer."""
    outs = []
    a = np.asarray(x, dtype=np.float64)
    for w, b, st in zip(weights["conv_weights"], weights["conv_biases"], strides, strict=True):
        k = w.shape[-1]
        p = k // 2
        padded = np.pad(a, ((0, 0), (p, p), (p, p)))
        h = (a.shape[1] + 2 * p - k) // st + 1
        wd = (a.shape[2] + 2 * p - k) // st + 1
        out = np.zeros((w.shape[0], h, wd))
        for i in range(k):
            for j in range(k):
                patch = padded[:, i : i + st * h : st, j : j + st * wd : st]
                out += np.tensordot(w[:, :, i, j], patch, axes=(1, 0))
        a = np.maximum(out + b[:, None, None], 0.0)
        outs.append(a)
    return outs
