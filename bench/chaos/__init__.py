"""The parts of bench/chaos_soak.py, the chaos and soak run against two replicas (see bench/README.md).

- `processes`: the replicas' server processes: free ports, /proc, launching, waiting, killing and stopping them;
- `load`: the request kinds and the workers that send the mix and record what each request saw;
- `chaos`: the kill and restart schedule;
- `checks`: the end checks and the report.
"""
