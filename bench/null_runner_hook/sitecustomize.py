"""On PYTHONPATH through bench/host_overhead.py: a process started with TKR_NULL_RUNNER_STEP_MS set (the server and
its engine process, a fresh interpreter) builds a runner that computes nothing instead of the model."""

import os

if os.environ.get("TKR_NULL_RUNNER_STEP_MS") is not None:
    import host_overhead

    host_overhead.install_null_runner(
        float(os.environ["TKR_NULL_RUNNER_STEP_MS"]), harmony=os.environ.get("TKR_NULL_RUNNER_HARMONY") == "1"
    )
