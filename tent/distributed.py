"""Multi-process evaluation on torch.distributed: `torchrun --nproc_per_node=N cifar10c.py --cfg ...`.

Under the settings that reset before every corruption x severity (tent/protocols.RESET_SETTINGS)
the pieces are independent runs: process r takes pieces r, r + N, r + 2N, ... and rank 0 gathers
the results into exactly the table one process prints. A sequential stream (continual, gradual,
mixed, correlated) depends on the whole stream, so rank 0 runs it whole while the other processes
wait (tent.cifar10c.my_pieces); to use them, run one process per CORRUPTION.ORDER_SEED or RNG_SEED
instead. Backend: NCCL on CUDA, else gloo (CPU). The helpers are dacommon.distributed's,
shared with ProDA.
"""
from dacommon.distributed import (barrier, broadcast, close, gather, init, is_main, rank,  # noqa: F401
                                  shard, world_size)
