"""The scoring server as a Ray Serve deployment: the same FastAPI app (:func:`toolrm_rl.serve.app.create_app`)
in every replica, one model per replica, for several GPUs or nodes.

Each replica loads the checkpoint on its own device (``cuda`` when it has GPUs, else ``cpu``) and runs
its own dynamic batcher; Ray Serve's proxy spreads requests over the replicas, so the routes,
responses and errors are exactly those of ``toolrm serve`` (the one-context group request and its group
scoring included). ray is imported inside functions only.

The same exposure rule holds (:func:`toolrm_rl.serve.app.check_exposure`: no non-loopback host without
a token unless ``insecure``), and the driver ships its token to every replica (a replica on another
node does not see the driver's environment). Ray's proxy, not uvicorn, owns the connections: it gets
``keep_alive_s`` (:func:`http_options`) and each replica enforces ``body_timeout_s``, but the
request-head deadline and the connection cap of ``toolrm serve`` are not available there.

    toolrm serve --model runs/toolrm/final --ray --replicas 4 --num-gpus-per-replica 1
"""

from __future__ import annotations

import dataclasses
from typing import Any

from toolrm_rl.serve.app import ServeConfig, check_exposure, resolve_token

__all__ = ["ToolRMReplica", "build_deployment", "deployment_options", "http_options", "replica_args",
           "run_ray_serve"]


class ToolRMReplica:
    """One replica: its config and token; Ray Serve calls :meth:`__serve_build_asgi_app__` on the
    replica after ``__init__``, so the model is loaded there, on the replica's own device."""

    def __init__(self, cfg: dict[str, Any], token: str | None = None) -> None:
        self.cfg, self.token = ServeConfig(**cfg), token

    def __serve_build_asgi_app__(self) -> Any:
        """The replica's ASGI app: :func:`toolrm_rl.serve.app.create_app` over the loaded checkpoint."""
        from toolrm_rl.serve.app import create_app

        return create_app(self.cfg.model, self.cfg, token=self.token)


def deployment_options(replicas: int = 1, num_gpus_per_replica: float = 0.0, num_cpus_per_replica: float = 1.0,
                       max_ongoing_requests: int = 256) -> dict[str, Any]:
    """Ray Serve deployment options: ``num_replicas`` and per-replica ``ray_actor_options``.

    ``max_ongoing_requests`` is high because each replica batches: many requests in flight per
    replica is what lets its batcher fill batches."""
    if replicas < 1:
        raise ValueError("replicas must be >= 1")
    if num_gpus_per_replica < 0 or num_cpus_per_replica < 0:
        raise ValueError("num_gpus_per_replica and num_cpus_per_replica must be >= 0")
    return {"name": "ToolRMScorer", "num_replicas": int(replicas), "max_ongoing_requests": int(max_ongoing_requests),
            "ray_actor_options": {"num_gpus": float(num_gpus_per_replica), "num_cpus": float(num_cpus_per_replica)}}


def build_deployment(config: ServeConfig, *, replicas: int = 1, num_gpus_per_replica: float = 0.0,
                     num_cpus_per_replica: float = 1.0, max_ongoing_requests: int = 256,
                     token: str | None = None) -> Any:
    """A bound Ray Serve application (``serve.run`` it) serving ``config.model`` with ``replicas`` replicas.

    :param config: server options; ``device`` is replaced by ``cuda`` in replicas that get GPUs.
    :param token: bearer token shipped to the replicas; None: each replica reads ``config.token_env``.
    :returns: ``Deployment.bind(...)`` (a ``ray.serve`` Application).
    """
    from ray import serve

    opts = deployment_options(replicas, num_gpus_per_replica, num_cpus_per_replica, max_ongoing_requests)
    deployment = serve.deployment(**opts)(serve.ingress()(ToolRMReplica))
    return deployment.bind(*replica_args(config, num_gpus_per_replica, token))


def replica_args(config: ServeConfig, num_gpus_per_replica: float = 0.0,
                 token: str | None = None) -> tuple[dict[str, Any], str | None]:
    """The ``ToolRMReplica(cfg, token)`` arguments shipped to every replica: the config as a dict with
    ``device="cuda"`` when replicas get GPUs."""
    device = "cuda" if num_gpus_per_replica > 0 and config.device == "cpu" else config.device
    return dataclasses.asdict(dataclasses.replace(config, device=device)), token


def http_options(config: ServeConfig) -> dict[str, Any]:
    """Ray Serve's proxy options for ``config``: host, port and the idle keep-alive (whole seconds, >= 1)."""
    return {"host": config.host, "port": config.port, "keep_alive_timeout_s": max(1, round(config.keep_alive_s))}


def run_ray_serve(config: ServeConfig, *, replicas: int = 1, num_gpus_per_replica: float = 0.0,
                  num_cpus_per_replica: float = 1.0, address: str | None = None, blocking: bool = True) -> Any:
    """Start Ray (or join ``address``), serve the deployment on ``config.host:config.port`` and, when
    ``blocking``, wait until interrupted. Returns the app handle.

    :raises ValueError: from :func:`~toolrm_rl.serve.app.check_exposure`, before Ray starts."""
    token = resolve_token(config)
    check_exposure(config, token)
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=address)
    serve.start(http_options=http_options(config))
    app = build_deployment(config, replicas=replicas, num_gpus_per_replica=num_gpus_per_replica,
                           num_cpus_per_replica=num_cpus_per_replica, token=token)
    handle = serve.run(app, name="toolrm", route_prefix="/", blocking=blocking)
    return handle
