"""Multi-GPU helpers of ProDA's trainer and loaders (runs launched by torchrun): dacommon.distributed's,
shared with tent, under the names ProDA's modules import from here.
"""
from dacommon.distributed import all_gather_rows, in_process_group, is_distributed, wrap_ddp  # noqa: F401
