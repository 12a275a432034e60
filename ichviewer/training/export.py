"""Export a trained member to ONNX under the inference contract, verified against PyTorch before it is listed.

Contract (`ichviewer.inference.manifest`, models/README.md): one float32 input
"image" (N, 3, H, W) with a dynamic batch axis; outputs "logits" (N, 6) in
`ichviewer.LABELS` order (sigmoid applied by the engine) and "features" (N, K, h, w),
the last convolutional block, and "block_penultimate", the block before it, with a
`<name>_tail_block_penultimate.onnx` from that block to the logits (the atlas
extension of the contract); a `<name>_cam.npz` holding the classifier
`weight` (6, K) and `bias` (6,), so logits == weight @ mean_hw(features) + bias
(Lee et al. 2019, Eq. 5 class activation maps).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ichviewer import LABELS
from ichviewer.core.windowing import LEE_WINDOWS

#: ONNX must reproduce the PyTorch logits to this max absolute difference (and features
#: to this times max(1, |features|)) before the model is written into a manifest.
LOGITS_TOLERANCE = 1e-4
OPSET = 17


class ExportMismatchError(RuntimeError):
    """The ONNX file does not reproduce the PyTorch model within tolerance."""


@dataclass(frozen=True)
class ExportCheck:
    max_logit_diff: float
    max_feature_diff: float
    n_images: int


#: Name of the intermediate block exposed for the atlas (the input of the last body module).
BLOCK_NAME = "block_penultimate"
BLOCK_OUTPUT = "block_penultimate"


def _modules(model):
    """The export wrappers: (image -> logits, features, penultimate block) and (block -> logits)."""
    import torch
    from torch import nn

    class WithBlock(nn.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.front = net.body[:-1]
            self.last = net.body[-1]
            self.net = net  # its head(): GAP + linear, or linear per cell then LSE / max

        def forward(self, x: torch.Tensor):
            b = self.front(x)
            f = self.last(b)
            return self.net.head(f), f, b

    class Tail(nn.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.last = net.body[-1]
            self.net = net

        def forward(self, b: torch.Tensor) -> torch.Tensor:
            return self.net.head(self.last(b))

    return WithBlock(model).eval(), Tail(model).eval()


def _export(module, dummy, path, inputs: list[str], outputs: list[str]) -> None:
    import torch

    with warnings.catch_warnings():
        # The TorchScript exporter is the one that needs no onnxscript; torch flags it as legacy.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={n: {0: "N"} for n in inputs + outputs},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def export_onnx(model, path: str | Path, input_size: int, tail_path: str | Path | None = None, channels: int = 3) -> None:
    """Write `model` as ONNX: outputs logits, features and the penultimate block; optionally the block's tail.

    The tail (block activations -> logits) lets the engine rank the block's filters for
    the atlas (models/README.md, "Atlas and prediction basis").
    """
    import copy

    import torch

    # Trained in channels_last; export a plain-layout copy (ONNX has one layout anyway).
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
    full, tail = _modules(model)
    dummy = torch.zeros(1, channels, input_size, input_size)
    _export(full, dummy, path, ["image"], ["logits", "features", BLOCK_OUTPUT])
    if tail_path is not None:
        with torch.no_grad():
            block = full(dummy)[2]
        _export(tail, torch.zeros_like(block), tail_path, ["block"], ["logits"])


def verify_onnx(model, path: str | Path, images: np.ndarray, tail_path: str | Path | None = None) -> ExportCheck:
    """Run `images` (n, 3, H, W) through PyTorch and ONNX Runtime (CPU) and compare the outputs (and the tail's)."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(images, dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        t_logits, t_feats = (t.numpy() for t in model(torch.from_numpy(x)))
    o_logits, o_feats, o_block = sess.run(["logits", "features", BLOCK_OUTPUT], {"image": x})
    d_logits = float(np.max(np.abs(o_logits - t_logits)))
    if tail_path is not None:
        tail = ort.InferenceSession(str(tail_path), opts, providers=["CPUExecutionProvider"])
        (tail_logits,) = tail.run(["logits"], {"block": o_block})
        d_logits = max(d_logits, float(np.max(np.abs(tail_logits - t_logits))))
    d_feats = float(np.max(np.abs(o_feats - t_feats)))
    scale = max(1.0, float(np.max(np.abs(t_feats))))
    if not d_logits <= LOGITS_TOLERANCE or not d_feats <= LOGITS_TOLERANCE * 10 * scale:
        raise ExportMismatchError(
            f"{path}: ONNX differs from PyTorch (max |logits| diff {d_logits:.3g}, features {d_feats:.3g}); "
            f"tolerance {LOGITS_TOLERANCE:g}"
        )
    return ExportCheck(d_logits, d_feats, int(x.shape[0]))


def write_cam_weights(model, path: str | Path) -> None:
    """The classifier of the GAP + linear head as `weight` (6, K) and `bias` (6,), LABELS order."""
    w = model.classifier.weight.detach().cpu().numpy().astype(np.float32)
    b = model.classifier.bias.detach().cpu().numpy().astype(np.float32)
    with open(path, "wb") as fh:  # np.savez on an open file keeps the exact name
        np.savez(fh, weight=w, bias=b)


def export_member(
    model,
    directory: str | Path,
    name: str,
    input_size: int,
    check_images: np.ndarray,
    interpolation_degree: int = 3,
    weight: float = 1.0,
    version: str = "1",
    windows=LEE_WINDOWS,
    crop: str = "none",
    slab_mm: float | None = None,
    context_slices: int = 1,
):
    """Export, verify and describe one member; returns (ModelSpec, ExportCheck).

    `context_slices` 3: the model reads each slice with its neighbours, `len(windows) * 3`
    channels (`ichviewer.inference.interpolation.with_context`); `check_images` are such stacks.

    The ModelSpec carries both SHA-256s; it is only made after `verify_onnx` passed.
    """
    from ichviewer.inference.manifest import BlockOutput, ModelSpec, file_sha256

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    onnx_path = directory / f"{name}.onnx"
    cam_path = directory / f"{name}_cam.npz"
    tail_path = directory / f"{name}_tail_{BLOCK_NAME}.onnx"
    channels = len(windows) * context_slices
    export_onnx(model, onnx_path, input_size, tail_path, channels=channels)
    rng = np.random.default_rng(0)
    probe = rng.random((2, channels, input_size, input_size), dtype=np.float32)
    imgs = np.concatenate([np.asarray(check_images, dtype=np.float32), probe]) if len(check_images) else probe
    check = verify_onnx(model, onnx_path, imgs, tail_path)
    write_cam_weights(model, cam_path)
    spec = ModelSpec(
        name=name,
        file=onnx_path.name,
        sha256=file_sha256(onnx_path),
        version=version,
        input_name="image",
        input_size=(input_size, input_size),
        windows=tuple(windows),
        crop=crop,
        slab_mm=slab_mm,
        context_slices=context_slices,
        logits_output="logits",
        activation="sigmoid",
        output_labels=LABELS,
        features_output="features",
        cam_weights_file=cam_path.name,
        cam_weights_sha256=file_sha256(cam_path),
        interpolation_degree=interpolation_degree,
        weight=weight,
        block_outputs=(
            BlockOutput(BLOCK_NAME, BLOCK_OUTPUT, tail_file=tail_path.name, tail_sha256=file_sha256(tail_path)),
        ),
        head_pooling=getattr(model, "pooling", "avg"),
    )
    return spec, check
