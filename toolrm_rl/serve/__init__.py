"""Serving ToolRM scores over HTTP: the scoring server and the client that every remote consumer uses.

- :mod:`toolrm_rl.serve.app`: ``toolrm serve`` (FastAPI + uvicorn): native ``/score``, vLLM-compatible
  ``/classify``, ``/health``, dynamic batching, bearer token, size limits, graceful drain.
- :mod:`toolrm_rl.serve.client`: :class:`RemoteScorer`, the ``remote`` scorer backend (retries,
  timeouts, circuit breaker; every failure is :class:`~toolrm_rl.scoring.ScorerUnavailable`).
- :mod:`toolrm_rl.serve.ray_serve`: the same app as a Ray Serve deployment with replicas.

This layer sits above :mod:`toolrm_rl.model` and :mod:`toolrm_rl.scoring`; fastapi, uvicorn and ray
are imported inside functions, so ``import toolrm_rl.serve`` is cheap (no torch).
"""

from toolrm_rl.serve.client import RemoteScorer

__all__ = ["RemoteScorer"]
