"""Training: from a configuration, a backend and a dataset to trained parameters.

One module per part, from the ground up: ``config`` (presets, hyperparameters and their
ranges), ``state`` (where a run is), ``splits`` (the data on the device), ``steps`` (the
compiled training step), ``prediction`` (labels on the device), ``signals`` (stopping
between two steps), ``metrics`` (the metrics file), ``memory`` (refusing what cannot
fit) and ``loop`` (``train``: the loop itself). ``multinet.fit`` is the way in from
Python and the command line.
"""
