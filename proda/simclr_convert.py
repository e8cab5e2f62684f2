"""SimCLRv2's TensorFlow ResNet checkpoint -> the SimCLR file ProDA's stages 2-3 start from.

google-research/simclr (TF1) builds its ResNet under the variable scope `base_model/` from
unnamed tf.layers, so every conv kernel is `base_model/conv2d[_N]/kernel` (H x W x in x out,
channels_last) and every batch norm `base_model/batch_normalization[_N]/` with `gamma`, `beta`,
`moving_mean`, `moving_variance`, numbered in the order the graph creates them: the stem, then
per bottleneck block the projection shortcut (first block of a group only) and the 1x1, 3x3,
1x1 convs, each conv followed by its batch norm. That is the order of torchvision's names, which
ProDA's backbone uses, so the N-th conv and the N-th batch norm get the N-th module name.

Only sk0 checkpoints fit (sk1 has a three-conv stem, selective kernels and an average-pooled
shortcut). The checkpoint also holds optimiser slots (`.../Momentum`), the projection head
(`head_contrastive/`), the linear head (`head_supervised/`) and `global_step`: all left out.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from proda.files import CheckpointError
from proda.utils import atomic_save

BASE_SCOPE = "base_model/"  # the trained network
EMA_SCOPE = "ema_model/base_model/"  # its moving average, where a checkpoint holds one
BN_ARRAYS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
DOWNLOAD = "https://storage.googleapis.com/simclr-checkpoints/simclrv2/pretrained/r101_1x_sk0/"
SOURCE = "a TF1 SimCLRv2 checkpoint such as gs://simclr-checkpoints/simclrv2/pretrained/r101_1x_sk0/model.ckpt-250228"
_VARIABLE = re.compile(r"(conv2d|batch_normalization)(?:_(\d+))?/(kernel|gamma|beta|moving_mean|moving_variance)")


def layer_variables(variables: Dict[str, np.ndarray], scope: str) -> Tuple[List[np.ndarray], List[dict]]:
    """The backbone's conv kernels and batch-norm arrays under `scope`, each list in creation order."""
    convs: Dict[int, np.ndarray] = {}
    bns: Dict[int, dict] = {}
    for name, value in variables.items():
        if not name.startswith(scope) or name.endswith("/Momentum"):
            continue
        match = _VARIABLE.fullmatch(name[len(scope):])
        if match is None or (match.group(1) == "conv2d") != (match.group(3) == "kernel"):
            raise CheckpointError(f"unexpected variable {name}: not a SimCLRv2 ResNet sk0 backbone")
        layer, index, array = match.group(1), int(match.group(2) or 0), match.group(3)
        if layer == "conv2d":
            convs[index] = np.asarray(value)
        else:
            bns.setdefault(index, {})[array] = np.asarray(value)
    if not convs:
        sample = ", ".join(list(variables)[:3]) or "none"
        raise CheckpointError(f"no conv kernels under '{scope}' (the names look like {sample}): expected {SOURCE}")
    count = max(convs) + 1
    for what, found in (("conv2d", convs), ("batch_normalization", bns)):
        odd = sorted(set(range(count)) ^ set(found))
        if odd:
            raise CheckpointError(f"{what}_{odd[0]} is {'missing' if odd[0] < count else 'extra'} among "
                                  f"{count} numbered convs: a damaged or different network")
    for index, bn in bns.items():
        if set(bn) != set(BN_ARRAYS):
            raise CheckpointError(f"batch_normalization_{index} lacks {sorted(set(BN_ARRAYS) - set(bn))[0]}")
    return [convs[i] for i in range(count)], [bns[i] for i in range(count)]


def module_names(kernels: Sequence[np.ndarray]) -> List[Tuple[str, str]]:
    """(conv, batch norm) names in ProDA's backbone for the kernels in creation order, the block
    structure read from the kernel sizes: a block is 1x1, 3x3, 1x1, led by a 1x1 projection when it starts a group."""
    stem = tuple(kernels[0].shape)
    if len(stem) != 4 or stem[:3] != (7, 7, 3):
        raise CheckpointError(f"the stem kernel is {stem}, not 7 x 7 x 3 x C: not a ResNet sk0 (sk1 has a 3x3 stem)")
    names, i, group, block = [("conv1", "bn1")], 1, 0, 0
    while i < len(kernels):
        projection = i + 1 < len(kernels) and kernels[i + 1].shape[:2] == (1, 1)
        group, block = (group + 1, 0) if projection else (group, block + 1)
        sizes = [k.shape[0] for k in kernels[i:i + 4 if projection else i + 3]]
        if group == 0 or sizes != ([1, 1, 3, 1] if projection else [1, 3, 1]) or group > 4:
            raise CheckpointError(f"conv2d_{i} onwards (kernel sizes {sizes}) is not a bottleneck block of "
                                  "a four-group ResNet sk0")
        prefix = f"layer{group}.{block}."
        if projection:
            names.append((prefix + "downsample.0", prefix + "downsample.1"))
        names += [(f"{prefix}conv{j}", f"{prefix}bn{j}") for j in (1, 2, 3)]
        i += len(sizes)
    if group != 4:
        raise CheckpointError(f"the checkpoint's ResNet has {group} block groups, not 4")
    return names


def convert(variables: Dict[str, np.ndarray], scope: str = BASE_SCOPE) -> Dict[str, torch.Tensor]:
    """SimCLRv2 variables (name -> array, as tf.train.load_checkpoint reads them) -> ProDA's backbone
    tensors: kernels HWIO -> OIHW, batch norms' gamma/beta/moving statistics -> weight/bias/running_*."""
    kernels, bns = layer_variables(variables, scope)
    state: Dict[str, torch.Tensor] = {}
    for (conv, norm), kernel, bn in zip(module_names(kernels), kernels, bns):
        if kernel.ndim != 4 or any(a.shape != (kernel.shape[3],) for a in bn.values()):
            raise CheckpointError(f"{norm} ({conv}): batch-norm arrays of shape {bn['gamma'].shape} after a "
                                  f"{kernel.shape} kernel")
        state[f"{conv}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), np.float32))
        for array, key in BN_ARRAYS.items():
            state[f"{norm}.{key}"] = torch.from_numpy(np.array(bn[array], np.float32))
    return state


def read_tf_checkpoint(path: str) -> Dict[str, np.ndarray]:
    """Every variable of a TensorFlow checkpoint (prefix path) but the optimiser slots; needs TensorFlow,
    which is not a dependency of this project, hence the import here (after naming a missing file)."""
    if not (os.path.isfile(path + ".index") or os.path.isdir(path)):
        raise CheckpointError(f"TensorFlow checkpoint not found: {path}.index (r101_1x_sk0's model.ckpt-250228.index "
                              f"and .data-00000-of-00001 are at {DOWNLOAD}; see docs/simclr.md)")
    try:
        import tensorflow as tf
    except ImportError:
        raise CheckpointError("reading a TensorFlow checkpoint needs TensorFlow: pip install tensorflow-cpu") from None
    try:
        reader = tf.train.load_checkpoint(path)
        names = [n for n in reader.get_variable_to_shape_map() if not n.endswith("/Momentum")]
        return {name: reader.get_tensor(name) for name in names}
    except Exception as err:  # TensorFlow raises several types (NotFoundError, DataLossError, ValueError)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"cannot read the TensorFlow checkpoint {path} (give the prefix, e.g. "
                              f"r101_1x_sk0/model.ckpt-250228, without .index): {first}") from None


def save(state: Dict[str, torch.Tensor], out: str) -> None:
    """Write {'state_dict': state}, the layout --simclr_path reads, atomically."""
    atomic_save({"state_dict": state}, out)
