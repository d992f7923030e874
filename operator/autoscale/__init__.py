"""The autoscaler (``spec.autoscaling``): prefill and decode replicas re-planned from the routers'
live traffic. ``decision`` is the pure decision; ``window``, ``histogram`` and ``router_metrics``
the arithmetic of the observation; ``sources`` and ``autoscaler`` the I/O around them;
``replan`` the planner's view; ``handover`` how replicas pass to an HPA or KEDA."""
