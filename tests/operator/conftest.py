"""The operator's devcluster fixtures (tests/operator_cluster.py), for the tests in this folder."""

from operator_cluster import operator, pools, rbac_operator

__all__ = ["operator", "pools", "rbac_operator"]
