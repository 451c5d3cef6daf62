"""simclr-search: self-supervised image embeddings, reverse image search and denoising.

The installed package is this one name, ``simclr_search``; the project's top-level folders
(``training/``, ``serving/``, ``index/``, ``bundle/``, ``protos/``) are mapped into it as
subpackages by ``pyproject.toml``, so an install never puts generic names such as ``index`` or
``bundle`` into site-packages. Dependencies point one way: ``serving`` -> ``index`` and ``bundle``;
``training`` -> ``bundle``; ``index`` and ``bundle`` know no models' code, and nothing imports
``serving`` but the command line.
"""

__version__ = "0.1.0"
