"""On PYTHONPATH through bench/step_trace.py: a process started with TKR_STEP_TRACE set (the server's engine
process, spawned with a fresh interpreter that keeps none of the tracer's patches) records its engine's steps too."""

import os

if os.environ.get("TKR_STEP_TRACE"):
    import step_trace

    step_trace.record(os.environ["TKR_STEP_TRACE"])
