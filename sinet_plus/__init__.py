"""The shared core of sinet-plus: what both the data engine (``pipeline``) and the model (``sinet``) build on.

- :mod:`sinet_plus.errors` — :class:`~sinet_plus.errors.UserError`, the one base class of problems a user can fix;
- :mod:`sinet_plus.cli` — the command-line toolkit: one way to build a Typer app, print the version and turn a
  user error into a one-line message and exit code 1;
- :mod:`sinet_plus.files` — atomic writes and content hashes;
- :mod:`sinet_plus.imageio` — photo and mask reading and writing in one mask convention;
- :mod:`sinet_plus.manifest` — the manifest, the one table every stage reads and writes;
- :mod:`sinet_plus.stage` — the one resumable runner of per-item stages;
- :mod:`sinet_plus.torch_utils` — device choice, seeding, autocast and safe checkpoint loading.

It imports nothing else of the project; ``docs/architecture.md`` draws the layers.
"""

__version__ = "0.1.0"
