"""One ensemble member loaded into ONNX Runtime, checked against its manifest entry."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ichviewer import LABELS
from ichviewer.inference.errors import ModelContractError
from ichviewer.inference.manifest import ModelSpec, file_sha256, pool_cell_logits
from ichviewer.inference.providers import create_session

#: Probe-run tolerance when checking that the CAM weights reproduce the logits.
HEAD_RTOL = 1e-3


@dataclass(frozen=True)
class ModelInfo:
    """What a result records about a model that ran."""

    name: str
    version: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def _dims(node: Any) -> list[Any]:
    shape = node.shape
    return list(shape) if shape is not None else []


class LoadedModel:
    """A checked ONNX session plus its manifest entry and CAM head.

    Outputs are returned in `ichviewer.LABELS` order whatever the model's own order.
    `cam_weight` (6, K) and `cam_bias` (6,) are the classifier of the GAP + linear
    head, also in LABELS order (None when the manifest has no CAM entry).
    """

    def __init__(self, spec: ModelSpec, path: Path, session: Any, cam_weight: np.ndarray | None, cam_bias: np.ndarray | None) -> None:
        self.spec = spec
        self.path = path
        self.session = session
        self.cam_weight = cam_weight
        self.cam_bias = cam_bias
        self.provider: str = session.get_providers()[0]
        self.max_batch: int | None = None
        self.feature_shape: tuple[int, int, int] | None = None
        self._order = np.asarray(spec.label_order)
        #: ONNX sessions of the gradient tails of intermediate blocks, by block name (see `block_gradient_weights`).
        self.tails: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.spec.name, self.spec.version, self.spec.sha256)

    @property
    def has_cam(self) -> bool:
        return self.cam_weight is not None

    def _error(self, problem: str) -> ModelContractError:
        return ModelContractError(self.spec.name, self.path, problem)

    def _run(self, outputs: list[str], batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self.max_batch or max(1, batch.shape[0])
        parts: list[list[np.ndarray]] = []
        for i in range(0, batch.shape[0], step):
            parts.append(self.session.run(outputs, {self.spec.input_name: batch[i : i + step]}))
        return [np.concatenate([p[j] for p in parts], axis=0) for j in range(len(outputs))]

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """(n, C, H, W) inputs -> (n, 6) logits (or probabilities if activation is "none")."""
        (out,) = self._run([self.spec.logits_output], batch)
        return np.asarray(out, dtype=np.float64).reshape(out.shape[0], -1)[:, self._order]

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        out = self.logits(batch)
        return _sigmoid(out) if self.spec.activation == "sigmoid" else np.clip(out, 0.0, 1.0)

    def logits_and_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 6) logits in LABELS order and (n, K, h, w) last-convolution features."""
        if not self.spec.features_output:
            raise self._error("the manifest names no feature output, so no attention map can be made")
        logits, feats = self._run([self.spec.logits_output, self.spec.features_output], batch)
        return np.asarray(logits, dtype=np.float64).reshape(logits.shape[0], -1)[:, self._order], np.asarray(feats, dtype=np.float32)

    @property
    def block_names(self) -> tuple[str, ...]:
        """Blocks whose activations this model exposes: the manifest's `block_outputs`, then the last block ("features")."""
        names = tuple(b.name for b in self.spec.block_outputs)
        return names + (("features",) if self.spec.features_output else ())

    def block_features(self, batch: np.ndarray, blocks: Sequence[str] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(n, 6) logits in LABELS order and {block name: (n, K_l, h_l, w_l)} activations in one run.

        "features" is the last block (the CAM features); other names come from the
        manifest's optional `block_outputs` (atlas building, Lee et al. 2019 Methods).
        """
        wanted = tuple(blocks) if blocks is not None else self.block_names
        by_name = {b.name: b.output for b in self.spec.block_outputs}
        if self.spec.features_output:
            by_name["features"] = self.spec.features_output
        unknown = [b for b in wanted if b not in by_name]
        if unknown:
            raise self._error(f"no block output named {unknown} (the manifest exposes {sorted(by_name)})")
        outs = self._run([self.spec.logits_output] + [by_name[b] for b in wanted], batch)
        logits = np.asarray(outs[0], dtype=np.float64).reshape(outs[0].shape[0], -1)[:, self._order]
        return logits, {b: np.asarray(o, dtype=np.float32) for b, o in zip(wanted, outs[1:], strict=True)}

    def block_gradient_weights(self, block: str, features: np.ndarray, label_index: int, channels: Sequence[int] | None = None,
                               *, label_mix: np.ndarray | None = None) -> np.ndarray:
        """Lee et al. 2019 Eq. 6 weights for an intermediate block: (1/S) sum_ij dz^c/dA_k,ij per channel k, shape (K,).

        With `label_mix` (one weight per label, LABELS order) the score differentiated is
        sum_c mix_c z^c instead of z^label_index (ANY made as the noisy-OR of the subtypes).

        ONNX Runtime has no backward pass, so the block's tail model (activations ->
        logits) is run once as is and once per channel k with channel k raised by eps
        everywhere: the difference of z^c is eps * sum_ij dz^c/dA_k,ij (exact for the
        piecewise-linear ReLU networks we use, up to a kink within eps). That costs one
        tail run per channel, so only `channels` are computed (the atlas's selected
        filters); the others are 0.
        """
        session = self.tails.get(block)
        if session is None:
            raise self._error(f"block '{block}' has no gradient tail in the manifest, so Eq. 6 cannot be computed for it")
        spec = next(b for b in self.spec.block_outputs if b.name == block)
        a = np.asarray(features, dtype=np.float32)
        if a.ndim != 3:
            raise ValueError(f"block features must be (K, h, w), got {a.shape}")
        k_all = a.shape[0]
        chans = np.arange(k_all) if channels is None else np.asarray(channels, dtype=np.int64)
        out = np.zeros(k_all, dtype=np.float64)
        if chans.size == 0:
            return out
        eps = np.float32(1e-3 * max(float(np.abs(a).mean()), 1e-3))  # small: fewer ReLU kinks crossed; float32 still resolves it
        s = float(a.shape[1] * a.shape[2])
        if label_mix is None:
            label_mix = np.eye(len(self._order))[label_index]
        mix = np.asarray(label_mix, dtype=np.float64)
        cols = np.asarray(self._order, dtype=np.int64)  # model column of each label

        def run(batch: np.ndarray) -> np.ndarray:
            (z,) = session.run([spec.tail_logits], {spec.tail_input: batch})
            return np.asarray(z, dtype=np.float64).reshape(batch.shape[0], -1)[:, cols] @ mix

        z0 = run(a[None])[0]
        step = 32  # channels per tail run: bounded memory for wide blocks
        for lo in range(0, chans.size, step):
            part = chans[lo : lo + step]
            batch = np.repeat(a[None], part.size, axis=0)
            batch[np.arange(part.size), part] += eps
            out[part] = (run(batch) - z0) / (float(eps) * s)
        return out

    # -- contract checks ---------------------------------------------------------------
    def check_signature(self) -> None:
        """Inputs and outputs as the manifest says: names, ranks, channel count, sizes, label count."""
        spec = self.spec
        inputs = {i.name: i for i in self.session.get_inputs()}
        if spec.input_name not in inputs:
            raise self._error(f"input '{spec.input_name}' named in the manifest is not in the model (it has {sorted(inputs)})")
        if len(inputs) != 1:
            raise self._error(f"the model must have exactly one input, it has {sorted(inputs)}")
        node = inputs[spec.input_name]
        if node.type != "tensor(float)":
            raise self._error(f"input '{node.name}' must be float32, the model has {node.type}")
        dims = _dims(node)
        if len(dims) != 4:
            raise self._error(f"input '{node.name}' must have rank 4 (N, C, H, W), the model has shape {dims}")
        n_ch = spec.input_channels
        if isinstance(dims[1], int) and dims[1] != n_ch:
            lists = f"{len(spec.windows)} windows" + (
                f" x {spec.context_slices} context slices = {n_ch} channels" if spec.context_slices != 1 else ""
            )
            raise self._error(f"input '{node.name}' has {dims[1]} channels, the manifest lists {lists}")
        for k, axis in ((2, "height"), (3, "width")):
            if isinstance(dims[k], int) and dims[k] != spec.input_size[k - 2]:
                raise self._error(
                    f"input '{node.name}' {axis} is {dims[k]}, the manifest says input size {list(spec.input_size)}"
                )
        if isinstance(dims[0], int) and dims[0] > 0:
            self.max_batch = dims[0]
        outputs = {o.name: o for o in self.session.get_outputs()}
        if spec.logits_output not in outputs:
            raise self._error(f"logits output '{spec.logits_output}' is not in the model (it has {sorted(outputs)})")
        ldims = _dims(outputs[spec.logits_output])
        if len(ldims) != 2:
            raise self._error(f"logits output '{spec.logits_output}' must have rank 2 (N, labels), the model has shape {ldims}")
        if isinstance(ldims[1], int) and ldims[1] != len(LABELS):
            raise self._error(f"logits output '{spec.logits_output}' has {ldims[1]} labels, the manifest lists {len(LABELS)}")
        if spec.features_output:
            if spec.features_output not in outputs:
                raise self._error(f"feature output '{spec.features_output}' is not in the model (it has {sorted(outputs)})")
            fdims = _dims(outputs[spec.features_output])
            if len(fdims) != 4:
                raise self._error(
                    f"feature output '{spec.features_output}' must have rank 4 (N, K, h, w), the model has shape {fdims}"
                )
            if self.cam_weight is not None and isinstance(fdims[1], int) and fdims[1] != self.cam_weight.shape[1]:
                raise self._error(
                    f"feature output '{spec.features_output}' has {fdims[1]} channels, the CAM weights have {self.cam_weight.shape[1]}"
                )
        for block in spec.block_outputs:
            if block.output not in outputs:
                raise self._error(f"block output '{block.output}' (block '{block.name}') is not in the model (it has {sorted(outputs)})")
            bdims = _dims(outputs[block.output])
            if len(bdims) != 4:
                raise self._error(f"block output '{block.output}' must have rank 4 (N, K, h, w), the model has shape {bdims}")

    def check_probe(self) -> None:
        """Run one deterministic input: output shapes, and that the CAM head reproduces the logits (Eq. 5 exactness)."""
        spec = self.spec
        h, w = spec.input_size
        rng = np.random.default_rng(0)
        x = rng.random((1, spec.input_channels, h, w), dtype=np.float32)
        try:
            if spec.features_output:
                logits, feats = self.logits_and_features(x)
            else:
                logits, feats = self.logits(x), None
        except ModelContractError:
            raise
        except Exception as exc:  # ORT raises its own exception types
            raise self._error(f"fails on a test input of shape {list(x.shape)}: {_first_line(exc)}") from None
        if logits.shape != (1, len(LABELS)):
            raise self._error(f"logits output gives shape {list(logits.shape)} for one image, expected [1, {len(LABELS)}]")
        if not np.isfinite(logits).all():
            raise self._error("logits output is not finite (NaN or infinity) on a test input")
        if feats is None:
            return
        if feats.ndim != 4 or feats.shape[0] != 1:
            raise self._error(f"feature output gives shape {list(feats.shape)} for one image, expected [1, K, h, w]")
        self.feature_shape = tuple(int(s) for s in feats.shape[1:])  # type: ignore[assignment]
        if self.cam_weight is None:
            return
        if feats.shape[1] != self.cam_weight.shape[1]:
            raise self._error(f"feature output has {feats.shape[1]} channels, the CAM weights have {self.cam_weight.shape[1]}")
        # Per-cell logits w^c . A_ij + b^c, pooled as the manifest says (avg: GAP then linear).
        cells = self.cam_weight.astype(np.float64) @ feats[0].reshape(feats.shape[1], -1).astype(np.float64)
        predicted = pool_cell_logits(cells + np.asarray(self.cam_bias, dtype=np.float64)[:, None], spec.head_pooling)
        if spec.activation == "none":
            predicted = _sigmoid(predicted)
        err = float(np.max(np.abs(predicted - logits[0])))
        if err > HEAD_RTOL * max(1.0, float(np.max(np.abs(logits[0])))):
            raise self._error(
                f"the CAM weights do not reproduce the model's logits from its features (max difference {err:.3g}): "
                f"the head is not linear + {spec.head_pooling} pooling with these weights, so attention maps would be wrong"
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _load_cam_weights(spec: ModelSpec, directory: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not spec.cam_weights_file:
        return None, None
    path = directory / spec.cam_weights_file
    if not path.is_file():
        raise ModelContractError(spec.name, path, "the CAM weights file named in the manifest is missing")
    digest = file_sha256(path)
    if digest != spec.cam_weights_sha256:
        raise ModelContractError(
            spec.name, path, f"CAM weights SHA-256 mismatch: manifest says {spec.cam_weights_sha256}, file has {digest}"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            weight = np.asarray(npz["weight"], dtype=np.float32)
            bias = np.asarray(npz["bias"], dtype=np.float64) if "bias" in npz.files else np.zeros(weight.shape[0])
    except KeyError:
        raise ModelContractError(spec.name, path, "the CAM weights file has no 'weight' array") from None
    except Exception as exc:
        raise ModelContractError(spec.name, path, f"cannot read the CAM weights: {_first_line(exc)}") from None
    if weight.ndim != 2 or weight.shape[0] != len(LABELS):
        raise ModelContractError(
            spec.name, path, f"CAM 'weight' must be (labels={len(LABELS)}, K), got {list(weight.shape)}"
        )
    if bias.shape != (len(LABELS),):
        raise ModelContractError(spec.name, path, f"CAM 'bias' must have {len(LABELS)} values, got {list(bias.shape)}")
    order = np.asarray(spec.label_order)
    return weight[order], bias[order]


def _load_tail(spec: ModelSpec, block: Any, directory: Path, providers: Sequence[str], threads: int | None) -> Any:
    """The ONNX session of a block's gradient tail, checked like a model file (exists, SHA-256, loads, input name)."""
    path = directory / block.tail_file
    if not path.is_file():
        raise ModelContractError(spec.name, path, f"the gradient tail of block '{block.name}' named in the manifest is missing")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != block.tail_sha256:
        raise ModelContractError(spec.name, path, f"tail SHA-256 mismatch for block '{block.name}': manifest says {block.tail_sha256}, file has {digest}")
    try:
        session = create_session(data, providers, threads=threads)
    except Exception as exc:
        raise ModelContractError(spec.name, path, f"ONNX Runtime cannot load the tail of block '{block.name}': {_first_line(exc)}") from None
    names = [i.name for i in session.get_inputs()]
    if names != [block.tail_input]:
        raise ModelContractError(spec.name, path, f"the tail of block '{block.name}' must have the single input '{block.tail_input}', it has {names}")
    outs = [o.name for o in session.get_outputs()]
    if block.tail_logits not in outs:
        raise ModelContractError(spec.name, path, f"the tail of block '{block.name}' has no output '{block.tail_logits}' (it has {outs})")
    return session


def load_model(
    spec: ModelSpec,
    directory: str | Path,
    providers: Sequence[str],
    *,
    threads: int | None = None,
    probe: bool = True,
) -> LoadedModel:
    """Load and check one member; any failure is a ModelContractError naming the model and the mismatch."""
    directory = Path(directory)
    path = directory / spec.file
    if not path.is_file():
        raise ModelContractError(spec.name, path, "model file is missing")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelContractError(spec.name, path, f"cannot read the model file: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise ModelContractError(spec.name, path, f"SHA-256 mismatch: manifest says {spec.sha256}, file has {digest}")
    weight, bias = _load_cam_weights(spec, directory)
    try:
        session = create_session(data, providers, threads=threads)
    except Exception as exc:  # InvalidProtobuf, Fail, RuntimeError...: a corrupt or unsupported file
        raise ModelContractError(spec.name, path, f"ONNX Runtime cannot load the model: {_first_line(exc)}") from None
    model = LoadedModel(spec, path, session, weight, bias)
    for block in spec.block_outputs:
        if block.tail_file:
            model.tails[block.name] = _load_tail(spec, block, directory, providers, threads)
    model.check_signature()
    if probe:
        model.check_probe()
    return model
