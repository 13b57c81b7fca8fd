"""Training state as safetensors tensors plus JSON scalars: loading never runs code.

Each ``*_to_parts`` returns ``(tensors, meta)``: tensors (live, on their
device: the commit queue copies them to host) go to a safetensors file, meta to
JSON. ``*_from_parts`` is the exact inverse.
"""

import random
from typing import Any

import numpy as np
import torch

OPT_STATE_PREFIX = "state"
RNG_TORCH = "rng.torch"
RNG_CUDA_PREFIX = "rng.cuda"
RNG_NUMPY = "rng.numpy"
# How the optimizer runs on this machine, not training state: a run saved on CPU
# and resumed on a GPU keeps the fused kernels it was built with.
_IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable", "differentiable")


def optimizer_to_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{OPT_STATE_PREFIX}.{param_id}.{key}"] = value.detach()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_parts(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, param_id, key = name.split(".", 2)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, values in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in meta["param_groups"]
    ]
    # Before loading: torch places each "step" tensor by these flags (on the device for fused kernels).
    for group, live in zip(groups, optimizer.param_groups):
        group.update({k: live[k] for k in _IMPLEMENTATION_FLAGS if k in live})
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_to_parts() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG a training step could touch: torch CPU and CUDA, numpy's and Python's globals."""
    tensors = {RNG_TORCH: torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{RNG_CUDA_PREFIX}.{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors[RNG_NUMPY] = torch.from_numpy(keys.astype(np.int64))
    version, py_state, gauss_next = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(cached)], "python": [version, list(py_state), gauss_next]}
    return tensors, meta


def rng_from_parts(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors[RNG_TORCH])
    cuda_keys = sorted((k for k in tensors if k.startswith(RNG_CUDA_PREFIX)), key=lambda k: int(k.rsplit(".", 1)[1]))
    cuda_states = [tensors[k] for k in cuda_keys]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors[RNG_NUMPY].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, py_state, gauss_next = meta["python"]
    random.setstate((version, tuple(py_state), gauss_next))
