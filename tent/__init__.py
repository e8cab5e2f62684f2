"""Tent: Fully Test-Time Adaptation by Entropy Minimization (Wang et al., ICLR 2021).

`import tent` exposes the reference tent.py names, so the official usage runs unchanged:

    model = tent.configure_model(model)
    params, param_names = tent.collect_params(model)
    optimizer = torch.optim.Adam(params, lr=1e-3)
    tented_model = tent.Tent(model, optimizer)
    outputs = tented_model(inputs)  # now it infers and adapts!

`tent.norm` holds test-time normalization (Norm), `tent.conf` the yacs config, and
`tent.cifar10c` the corruption benchmark (`python cifar10c.py --cfg cfgs/tent.yaml`).
"""
from .compat import install_autoattack_alias

# robustbench imports `autoattack`, which pip installs as `pyautoattack` (lazy alias, see compat.py)
install_autoattack_alias()

from . import conf, norm  # noqa: E402
from .tent import (  # noqa: E402
    Tent, check_model, collect_params, configure_model, copy_model_and_optimizer,
    forward_and_adapt, load_model_and_optimizer, softmax_entropy)

__all__ = [
    "Tent", "softmax_entropy", "forward_and_adapt", "collect_params", "configure_model",
    "check_model", "copy_model_and_optimizer", "load_model_and_optimizer", "conf", "norm",
]
