"""scripts/test_capabilities.sh emulates other CPUs through ATEN_CPU_CAPABILITY: torch must honour it."""
import os
import subprocess
import sys


def test_aten_cpu_capability_default_is_honoured():
    # `default` (no SIMD) exists on every CPU torch supports; if torch ignored the variable, the
    # script would run the native kernels three times and report them as other CPUs'
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "DEFAULT", out.stderr
