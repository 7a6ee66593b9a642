"""Serving ToolRM scores over HTTP.

- :mod:`toolrm_rl.serve.app`: ``toolrm serve`` (FastAPI + uvicorn): native ``/score``, vLLM-compatible
  ``/classify``, ``/health``, dynamic batching, bearer token, size limits, graceful drain.
- :mod:`toolrm_rl.serve.ray_serve`: the same app as a Ray Serve deployment with replicas.

Its client, the ``remote`` scorer, lives with the other scorers (:mod:`toolrm_rl.scoring.remote`). This layer
sits above :mod:`toolrm_rl.model` and :mod:`toolrm_rl.scoring`; fastapi, uvicorn and ray are imported inside
functions, so ``import toolrm_rl.serve`` is cheap (no torch).
"""
