"""One module per array library, installed as ``multinet.backends``.

Each module exposes ``load() -> multinet.registry.Backend`` and raises
``multinet.errors.BackendUnavailable`` (with the reason) when its library cannot run
here. Modules are found through the ``multinet.backends`` entry-point group declared in
``pyproject.toml``, the same way a third-party backend registers itself, and are
imported only when chosen: ``--backend numpy`` never imports JAX or touches a GPU.

This is the only place in multinet that names array libraries, apart from the
benchmark's peers (``multinet.peers``: the same math written natively in a library, to
time against), which import theirs inside functions only. ``generic`` names none: it
runs any array-API library by its import name.
"""
