"""multinet from Python: train, look at the result, save it, load it back.

Everything the ``multinet`` command does for training goes through here (the CLI parses
its options and calls these functions), so a notebook and the command line run the same
code. Names and defaults are the CLI's: ``fit(iterations=100)`` is ``multinet train
--iterations 100``. Errors name the Python arguments (``data_dir=``); the CLI spells
them as its flags.

``fit`` (in ``fitting.py``, a name apart from the function's) trains and returns a
``Run`` (``run.py``), which ``load`` also makes from a checkpoint; ``resume.py`` is what
``fit(resume=...)`` continues. The package ``multinet`` hands these names on:
``multinet.fit``, ``multinet.Run``...
"""
