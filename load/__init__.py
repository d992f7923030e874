"""``tandem load``: open-loop load against an OpenAI-compatible server, measured as vLLM measures it.

The pure core plans and judges a run: :mod:`~tandem.load.schedule` (rate schedules, arrival times),
:mod:`~tandem.load.lengths` and :mod:`~tandem.load.trace` (what each request asks for),
:mod:`~tandem.load.workload` (the planned arrivals), :mod:`~tandem.load.prompts` (prompts of a length
in the server's tokens), :mod:`~tandem.load.stats` (summary, SLO attainment, windows) and
:mod:`~tandem.load.report`. The shell does the I/O: :mod:`~tandem.load.client` (one streamed request),
:mod:`~tandem.load.openloop` (dispatch on the clock), :mod:`~tandem.load.pool` (replicas from
Kubernetes), :mod:`~tandem.load.chart`, :mod:`~tandem.load.run` and :mod:`~tandem.load.cli`.

This package imports :mod:`tandem.api` and nothing else of Tandem's.
"""
