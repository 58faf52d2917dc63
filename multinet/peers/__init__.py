"""Benchmark peers: the bench workloads written natively in another library, the way
its users would write the same math, so ``multinet bench --peer NAME`` can set
multinet's numbers beside them. Not backends: nothing here runs multinet's network.

One module per peer, named after the library (``multinet.peers.torch``), exposing
``bench(config: multinet.bench.BenchConfig) -> list[dict]`` (rows as
``multinet.bench.bench_backend`` makes them, with ``"peer"`` set to the peer's name).
Each imports its library inside ``bench`` only, so that listing peers imports none.
"""

#: Every peer, by the name ``--peer`` takes (also the library's import name);
#: ``--peer all`` runs each of them that is installed.
PEERS = ("torch", "jax")
