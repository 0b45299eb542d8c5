"""The chaos: a replica's server or engine SIGKILLed every 60-120 s, and a new server started on its port."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import Counter
from dataclasses import dataclass

from .load import LoadGenerator
from .processes import Replica, kill_tree, launch, log, wait_exit, wait_gone, wait_healthy


@dataclass
class KillEvent:
    at_s: float
    replica: str
    kind: str  # kill_server: SIGKILL the server; kill_engine: SIGKILL its engine child
    exit_code: int | None = None  # -9 after kill_server; 1 after kill_engine (engine.on_failure: exit)
    exit_expected: bool = False
    orphaned_engine: bool = False  # the engine child outlived its killed server by more than 10 s
    downtime_s: float = 0.0
    restarted: bool = False


class Chaos:
    """Kills a replica every 60-120 s and brings it back on the same port.

    Kills alternate between the replicas, and each replica alternates between killing its server and killing its
    engine. From 60 s before the middle of the run on, only replica 1 is killed, so that replica 0's last incarnation
    lives through the whole second half and its RSS can be judged for flatness."""

    def __init__(
        self, replicas: list[Replica], load: LoadGenerator, seconds: float, seed: int, every_s: tuple[float, float]
    ) -> None:
        self.every_s = every_s
        self.replicas = replicas
        self.load = load
        self.seconds = seconds
        self.rng = random.Random(seed + 1)
        self.events: list[KillEvent] = []
        self.kills_per_replica = Counter[str]()

    async def run(self) -> None:
        next_kill = self.rng.uniform(*self.every_s)
        while next_kill < self.seconds - 20:  # the last restart must be done before the load stops
            await asyncio.sleep(max(0.0, next_kill - self.load.now_s()))
            await self.kill_and_restart(self.choose_replica())
            next_kill = self.load.now_s() + self.rng.uniform(*self.every_s)

    def choose_replica(self) -> Replica:
        protect_first = self.load.now_s() > self.seconds / 2 - 60
        if protect_first or len(self.events) % 2 == 1:
            return self.replicas[1]
        return self.replicas[0]

    async def kill_and_restart(self, replica: Replica) -> None:
        kind = "kill_server" if self.kills_per_replica[replica.name] % 2 == 0 else "kill_engine"
        self.kills_per_replica[replica.name] += 1
        event = KillEvent(self.load.now_s(), replica.name, kind)
        self.events.append(event)
        incarnation, process = replica.current, replica.process
        assert process is not None
        log(f"chaos: {kind} on {replica.name} (pid {incarnation.pid}, engine {incarnation.engine_pid})")
        replica.up = False
        replica.epoch += 1
        incarnation.ended_by, incarnation.killed_s = kind, event.at_s
        if kind == "kill_server":
            os.kill(process.pid, signal.SIGKILL)
        elif incarnation.engine_pid is not None:
            os.kill(incarnation.engine_pid, signal.SIGKILL)
        # A dead engine makes the server exit 1 (engine.on_failure: exit) once it has failed its requests.
        event.exit_code = await wait_exit(process, 60)
        if event.exit_code is None:
            log(f"chaos: {replica.name} did not exit after {kind}; killing it")
            kill_tree(process)
            event.exit_code = process.returncode
        event.exit_expected = event.exit_code == (-signal.SIGKILL if kind == "kill_server" else 1)
        if incarnation.engine_pid is not None:
            # The engine child reads its pipe from the server: a dead server must take it along.
            event.orphaned_engine = not await wait_gone(incarnation.engine_pid, 10)
            if event.orphaned_engine:
                os.kill(incarnation.engine_pid, signal.SIGKILL)
        incarnation.ended_s, incarnation.exit_code = self.load.now_s(), event.exit_code
        incarnation.orphaned_engine = event.orphaned_engine
        launch(replica, self.load.now_s())
        try:
            await wait_healthy(replica)
        except RuntimeError as exc:
            log(f"chaos: {replica.name} did not come back: {exc}")  # the replica stays down; a check fails
            return
        event.restarted = True
        event.downtime_s = self.load.now_s() - event.at_s
        log(f"chaos: {replica.name} back after {event.downtime_s:.1f} s (exit {event.exit_code})")
