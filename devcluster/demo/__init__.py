"""The local demo (``tandem demo``, ``make demo``): Tandem end to end on one machine.

It starts a cluster (a devcluster from ``$KUBEBUILDER_ASSETS``, else kind when kind and Docker are
there), installs the Helm chart (the operator runs as a pod), applies the simulator pool, waits
for ``Ready``, then streams a short and a long prompt through the pool's router with the
``openai`` SDK and prints the route each took, TTFT, tokens/s and the pool's plan.

It lives beside the devcluster because it is the devcluster's main user outside the tests; the
end-to-end tests (``e2e/``) reuse its chart, pool and traffic helpers rather than the reverse, so
the demo never depends on test code. It needs the dev extras (``helm-python-sdk``, ``openai``),
which ``make demo`` installs; the runtime image does not carry them.
"""

from __future__ import annotations


class DemoError(Exception):
    """A step of the demo failed; the message says which and what to do."""
