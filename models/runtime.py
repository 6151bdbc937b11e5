"""TensorFlow's process-wide set-up: the one place thread counts are set, for training and serving."""
from __future__ import annotations

import os

_configured = False


def configure_tensorflow(threads: int) -> None:
    """Thread pools must be sized before TensorFlow runs anything; later calls keep the first size.

    Serving processes use one thread each (web and worker share the cores);
    training uses every core (`Settings.serving_threads` / `training_threads`).
    """
    global _configured
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if _configured:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, threads))
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
    except RuntimeError:
        pass  # the runtime is already initialised by an earlier caller in this process
    _configured = True
