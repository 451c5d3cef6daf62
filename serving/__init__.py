"""Serving: the exported models and the index behind gRPC, by role.

* ``core``: what the RPCs do, with no transport (models, micro-batching, the index, errors);
* ``server``: the gRPC server around the core (``simclr serve``);
* ``client``: the Python client and the client-side commands (``simclr search / embed / denoise``);
* ``jobs``: batch work that runs the core in-process (``simclr index``, ``simclr quickstart``).
"""
