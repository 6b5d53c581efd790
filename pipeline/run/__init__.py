"""`pipeline run`: one command from photos to a trained and evaluated SINet, each stage skipped when current.

The orchestrator is deliberately thin. :mod:`~pipeline.run.config` reads a TOML config, :mod:`~pipeline.run.plan`
turns it into a list of :class:`~pipeline.run.step.Step` s, and :mod:`~pipeline.run.runner` runs them in order:

- the heavy stages (``crop-baidu``, ``train-teacher``, ``pseudo-label``, ``sinet predict/train/eval``) run as
  **subprocesses of their own commands**. The commands are the stages' contracts, so the orchestrator adds no
  second way to call them; each keeps its own option parsing, error messages, progress and resume logic; and a
  subprocess per stage gives every stage its own thread setting and frees its memory (a teacher, MTCNN and two
  SINet trainings never share one Python heap). Starting a command costs seconds, nothing next to the stages.
- the cheap review steps (queue, auto-accept, export) run **in process** on the review store's Python core
  (:mod:`pipeline.review`): they are a few SQLite transactions, and auto-accept has no command of its own.

**Skipping** (:mod:`~pipeline.run.step`). Each step has a fingerprint: SHA-256 over its command (or its settings),
the content of its external inputs (file bytes; a folder's file names and bytes) and the fingerprints
of the steps it reads from. A record ``<out>/.run/<step>.json`` is written when the step starts (``running``) and
when it succeeds (``done``). A step is skipped when its record is ``done`` with the same fingerprint and its outputs
exist; a ``running`` record with the same fingerprint means an interrupted run, so the step is resumed (its
command's ``--resume`` flag where it has one; the per-item stages resume by themselves); a different fingerprint
removes the step's own outputs first, so stale partial results are never mixed with new ones.
"""
