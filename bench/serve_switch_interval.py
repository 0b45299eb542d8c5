"""Run the server with another GIL switch interval: python bench/serve_switch_interval.py SECONDS

An experiment for bench/gpu_phase6.sh (PART=serve): does the engine's worker thread wait for the GIL
behind the event loop's HTTP work?
"""

import runpy
import sys

sys.setswitchinterval(float(sys.argv[1]))
sys.argv = sys.argv[:1]
runpy.run_module("tkr_embed.api.server", run_name="__main__")
