"""Data-parallel training on torch.distributed (gloo, CPU): the rank's environment (env),
the sharded sampler (sampler), the data-parallel VisionLearner (ddp) and the process
supervisor behind ``fastcore-cv train --nproc N`` (launch). Imported only by ``train``."""
