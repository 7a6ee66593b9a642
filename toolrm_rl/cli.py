"""The ``toolrm`` command line: a thin typer layer over the library.

Commands: ``core`` (parse, check and match tool calls; a demonstration on real BFCL data), ``synth``
(training pairs), ``train`` (a ToolRM), ``eval`` (``fc-rewardbench``, ``best-of-n``, ``noise``, ``biases``),
``bench build`` (FC-RewardBench-format pairs from BFCL logs), ``filter`` (reward-guided data filtering),
``serve`` (the scoring server), ``verl-data`` (verl parquet rows) and ``quickstart`` (the whole pipeline).
Each command only parses options and calls library functions; scorers come from
:func:`toolrm_rl.scoring.build_scorers`.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path
from typing import Optional

import typer

import toolrm_rl

app = typer.Typer(name="toolrm", help="ToolRM: outcome reward models for tool-calling LLMs, for verl RL training.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
core_app = typer.Typer(help="The tool-call core: parse model outputs, check them against schemas and ground truth.",
                       no_args_is_help=True)
app.add_typer(core_app, name="core")
eval_app = typer.Typer(help="Evaluate scorers: FC-RewardBench pairwise accuracy, Best-of-N, noise robustness.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"toolrm-rl {toolrm_rl.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """ToolRM: outcome reward models for tool-calling LLMs, for verl RL training."""


def _read_arg(value: str) -> str:
    """An option given as text, ``@path`` (file contents) or ``-`` (standard input)."""
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.exists():
            raise typer.BadParameter(f"file not found: {path}")
        return path.read_text(encoding="utf-8")
    return value


_RECIPE_CTX = {"allow_extra_args": True, "ignore_unknown_options": True}


def _split_list(values: Optional[list[str]]) -> list[str]:
    """Repeated options and comma-separated lists alike: ``--models a,b --models c`` -> [a, b, c]."""
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def _recipe_config(config_cls: type, ctx: typer.Context, config: Optional[Path], values: dict) -> object:
    """Defaults <- recipe (``--config`` or a leading ``*.yaml`` argument) <- key=value extras <- given flags."""
    from toolrm_rl.config import load_structured

    extras = list(ctx.args)
    if config is None and extras and extras[0].endswith((".yaml", ".yml")) and "=" not in extras[0]:
        config = Path(extras.pop(0))
        if not config.is_file():
            raise typer.BadParameter(f"recipe not found: {config}")
    bad = [a for a in extras if "=" not in a]
    if bad:
        raise typer.BadParameter(f"overrides must be key=value, got {bad}")
    try:
        return load_structured(config_cls, config, extras, {k: v for k, v in values.items() if v is not None})
    except Exception as err:  # omegaconf names the bad key
        raise typer.BadParameter(f"{config or 'config'}: {err}") from None


def _print_config(cfg: object) -> None:
    from omegaconf import OmegaConf

    typer.echo(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    raise typer.Exit()


@core_app.command("check")
def core_check(
    output: str = typer.Option(..., "--output", "-o", help="Model output text, @FILE or - for stdin."),
    tools: str = typer.Option(..., "--tools", "-t", help="Tool catalog as JSON (OpenAI, plain or BFCL docs) or @FILE."),
    answer: Optional[str] = typer.Option(None, "--answer", "-a", help="BFCL possible answer as JSON or @FILE (optional)."),
    fmt: str = typer.Option("auto", "--format", "-f", help="Output format: auto, hermes, json, pythonic, openai."),
    category: str = typer.Option("simple", "--category", "-c", help="BFCL category for matching (simple, multiple, parallel, ...)."),
) -> None:
    """Parse one model output, check it against the tool schemas and (optionally) a ground truth; print JSON.

    Exit code 0 when the output parses, passes the schema rules and (with --answer) matches; 1 otherwise."""
    from toolrm_rl.core import CatalogError, ToolCatalog
    from toolrm_rl.core.bfcl_types import language_of_category
    from toolrm_rl.core.match import GroundTruth
    from toolrm_rl.core.parse import parse
    from toolrm_rl.core.schema import check_calls

    try:
        catalog = ToolCatalog.load(_read_arg(tools))
        truth = GroundTruth(catalog, _read_arg(answer), category) if answer else None
    except (CatalogError, ValueError) as err:
        raise typer.BadParameter(str(err)) from None
    result = parse(_read_arg(output), fmt)
    # with --answer, a value BFCL accepts for the question is no schema violation (the verl reward's gate too)
    report = check_calls(result.calls, catalog, language=language_of_category(category), answer=truth)
    out = {
        "format": result.format,
        "parse_error": None if result.ok else {"kind": result.error.kind, "message": result.error.message},
        "calls": [c.to_bfcl() for c in result.calls],
        "schema_ok": report.ok and result.ok,  # an unparsable output is not schema-valid
        "violations": [{"call": v.call_index, "function": v.function, "param": v.param, "category": v.category,
                        "bfcl_error_type": v.bfcl_error_type, "message": v.message} for v in report.violations],
    }
    passed = out["schema_ok"]
    if truth is not None:
        verdict = truth.check(result.calls)
        out["match"] = {"valid": verdict.valid, "error_type": verdict.error_type, "message": verdict.message}
        passed = passed and verdict.valid
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False, default=repr))
    if not passed:
        raise typer.Exit(1)


@core_app.command("demo")
def core_demo(
    questions: int = typer.Option(300, help="How many BFCL questions to use (spread over all single-turn categories)."),
    seed: int = typer.Option(0, help="Seed for question sampling and mutations."),
    show_render: bool = typer.Option(True, help="Also print one reward-model input rendered for a 512-token encoder."),
) -> None:
    """Demonstrate the core on real BFCL data: mutate ground-truth calls, then parse, schema-check and match them."""
    import random

    from rich.console import Console
    from rich.table import Table

    from toolrm_rl.core.match import GroundTruth
    from toolrm_rl.core.parse import parse_hermes, to_hermes
    from toolrm_rl.core.schema import check_calls
    from toolrm_rl.data.bfcl import load_bfcl
    from toolrm_rl.data.mutate import mutate

    console = Console()
    try:
        records = load_bfcl()
    except FileNotFoundError as err:
        raise typer.BadParameter(str(err)) from None
    rng = random.Random(seed)
    sample = rng.sample(records, min(questions, len(records)))
    by_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    error_types: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for k, rec in enumerate(sample):
        truth = GroundTruth(rec.tools, rec.answer, rec.category)
        variants = [("ground_truth", rec.gold)] + mutate(rec.gold, rec.tools, seed=seed + k,
                                                          literal_values=rec.language != "python")
        for op, calls in variants:
            parsed = parse_hermes(to_hermes(calls))  # through text, as a policy's output would arrive
            report = check_calls(parsed.calls, rec.tools, language=rec.language, answer=truth)  # as the reward gates
            verdict = truth.check(parsed.calls)
            stats = by_op[op]
            stats["n"] += 1
            stats["parsed"] += parsed.ok
            stats["schema_ok"] += report.ok
            stats["bfcl_valid"] += verdict.valid
            stats["schema_ok_but_wrong"] += report.ok and not verdict.valid
            error_types[op][verdict.error_type or "valid"] += 1

    table = Table(title=f"Tool-call core on {len(sample)} BFCL questions: ground truth and its mutations")
    for col in ("variant", "outputs", "parsed", "schema ok", "BFCL valid", "schema ok but wrong", "most common BFCL verdict"):
        table.add_column(col, justify="left" if col in ("variant", "most common BFCL verdict") else "right")
    for op, s in sorted(by_op.items(), key=lambda kv: (kv[0] != "ground_truth", kv[0])):
        top, cnt = error_types[op].most_common(1)[0]
        table.add_row(op, str(s["n"]), f"{s['parsed'] / s['n']:.0%}", f"{s['schema_ok'] / s['n']:.0%}",
                      f"{s['bfcl_valid'] / s['n']:.0%}", f"{s['schema_ok_but_wrong'] / s['n']:.0%}",
                      f"{top} ({cnt / s['n']:.0%})")
    console.print(table)
    console.print("[dim]'schema ok but wrong': outputs no schema rule can reject, which only a reward model "
                  "(or ground truth) can judge.[/dim]")
    if show_render:
        from toolrm_rl.core.render import RenderSpec, render

        rec = max(sample, key=lambda r: len(json.dumps(r.meta["functions"])))
        rendered = render(rec.tools, rec.conversation, rec.gold,
                          spec=RenderSpec(mode="plain", max_tokens=512, sep="\n[SEP]\n"))
        console.rule(f"Reward-model input for {rec.id} ({len(rec.tools)} functions, plain mode, 512-token budget)")
        console.print(rendered.text, markup=False, highlight=False)
        console.print(f"[dim]~{rendered.n_tokens} tokens (estimate without a tokenizer); "
                      f"truncation: {rendered.truncation}[/dim]")


@app.command("train", context_settings=_RECIPE_CTX)
def train_cmd(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., exists=True, dir_okay=False, help="Recipe YAML (see recipes/rm/)."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
) -> None:
    """Train ToolRM from a recipe YAML. Extra arguments are key=value overrides (train.max_minutes=5)."""
    import logging

    from toolrm_rl.model.train import RMTrainConfig, train

    cfg = _recipe_config(RMTrainConfig, ctx, recipe, {})
    if print_config:
        _print_config(cfg)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = train(cfg)
    ev = result.metrics.get("eval", {})
    typer.echo(f"final model: {result.final_dir}")
    if ev:
        typer.echo(f"held-out pairwise accuracy: {ev.get('eval_accuracy', float('nan')):.3f} "
                   f"(loss {ev.get('eval_loss', float('nan')):.3f})")
    typer.echo(f"metrics: {Path(cfg.train.output_dir) / 'metrics.json'}")


@eval_app.command("fc-rewardbench", context_settings=_RECIPE_CTX)
def eval_fc_rewardbench(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False,
                                          help="Recipe YAML (recipes/eval/fc_rewardbench.yaml); flags override it."),
    data: Optional[str] = typer.Option(None, "--data", help="FC-RewardBench-format pairs: a local file/dir or a hub id."),
    scorer: Optional[list[str]] = typer.Option(None, "--scorer", help="rules, rm, hybrid, judge, hf-rm (repeatable)."),
    model: Optional[str] = typer.Option(None, "--model", help="ToolRM checkpoint for rm/hybrid."),
    split: Optional[str] = typer.Option(None, help="Dataset split (hub ids, DatasetDict dirs)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for report.md, report.json, by_category.png."),
    as_json: bool = typer.Option(False, "--json", help="End standard output with one JSON line of the results."),
    wandb: Optional[bool] = typer.Option(None, "--wandb/--no-wandb", help="Log a wandb table (offline without credentials)."),
    skip_bad_rows: Optional[bool] = typer.Option(None, "--skip-bad-rows", help="Count and skip malformed rows instead of failing."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
) -> None:
    """Pairwise accuracy (ties are not wins) with a 95% CI, overall, on the schema-valid subset and by
    error category, test category, model and error type. Extra arguments are key=value overrides
    (scorer_options.judge.base_url=..., scorer_options.judge.model=..., scorer_options.hf-rm.path=...,
    scorer_options.rm.device=cuda, limit=100).

    With --json the last line is one JSON object: the first scorer's report at the top level (accuracy,
    n, ties, ci95, by_error_type, by_category, schema_valid_subset, ...) and "scorers": {name: report}."""
    import logging

    from toolrm_rl.eval.fc_rewardbench import FCRewardBenchConfig, run
    from toolrm_rl.scoring import ScorerUnavailable

    flags = {"data": data, "model": model, "split": split, "out": str(out) if out is not None else None,
             "wandb": wandb, "skip_bad_rows": skip_bad_rows, "scorers": list(scorer) if scorer else None}
    cfg = _recipe_config(FCRewardBenchConfig, ctx, config, flags)
    if print_config:
        _print_config(cfg)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        result = run(cfg, echo=typer.echo)
    except (ValueError, FileNotFoundError) as err:  # a missing --data file or a bad row (file, row, field)
        raise typer.BadParameter(str(err)) from None
    except ScorerUnavailable as err:
        typer.echo(f"scorer unavailable: {err}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(result))


# ---------------------------------------------------------------------------------------- serve
@app.command("serve")
def serve_cmd(
    model: str = typer.Option(..., "--model", help="ToolRM checkpoint directory (with toolrm.json)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback unless you mean to expose it)."),
    port: int = typer.Option(8000, help="TCP port."),
    token_env: str = typer.Option("TOOLRM_SERVE_TOKEN", help="Env var with the bearer token (unset: no auth)."),
    max_batch: int = typer.Option(64, help="Most texts per forward of the dynamic batcher."),
    max_wait_ms: float = typer.Option(5.0, help="Batcher wait for more texts after the first one (ms)."),
    max_body_mb: float = typer.Option(8.0, help="Largest request body (413 above)."),
    max_items: int = typer.Option(512, help="Most items per request (413 above)."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N."),
    dtype: Optional[str] = typer.Option(None, help="float32, bfloat16, auto (default: fp32 on CPU, bf16 else)."),
    served_name: Optional[str] = typer.Option(None, help="Model name in responses (default: directory name)."),
    torch_threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's; 1 on a shared CPU)."),
    group: bool = typer.Option(True, "--group/--no-group", help="Decoder backbones: score /score texts of one "
                               "context against a shared prefix run once (same scores, faster for groups)."),
    ray: bool = typer.Option(False, "--ray", help="Serve with Ray Serve replicas instead of one uvicorn process."),
    replicas: int = typer.Option(1, help="--ray: number of replicas."),
    num_gpus_per_replica: float = typer.Option(0.0, help="--ray: GPUs per replica (>0 puts the model on cuda)."),
    num_cpus_per_replica: float = typer.Option(1.0, help="--ray: CPUs per replica."),
    ray_address: Optional[str] = typer.Option(None, help="--ray: address of a running Ray cluster (default: start one)."),
    header_timeout_s: float = typer.Option(10.0, help="Seconds a connection has to send a complete request head; "
                                           "then it is closed."),
    body_timeout_s: float = typer.Option(30.0, help="Seconds to receive a request body (408 after)."),
    keep_alive_s: float = typer.Option(5.0, help="Seconds an idle kept-alive connection stays open."),
    max_connections: int = typer.Option(1000, help="Most open connections / requests in flight (503 above; 0: no cap)."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback --host without a bearer token "
                                  "(anyone who reaches the port can use the model)."),
) -> None:
    """Serve ToolRM scores over HTTP: POST /score (native), POST /classify (vLLM-compatible), GET /health.

    Binding beyond loopback (--host 0.0.0.0, a LAN address) needs a bearer token in --token-env's
    variable, or --insecure."""
    import logging

    from toolrm_rl.serve.app import ServeConfig, check_exposure, run_server

    if not Path(model).is_dir():
        raise typer.BadParameter(f"--model: not a checkpoint directory: {model}")
    try:
        config = ServeConfig(model=model, host=host, port=port, token_env=token_env or None, max_batch=max_batch,
                             max_wait_ms=max_wait_ms, max_body_mb=max_body_mb, max_items=max_items, device=device,
                             dtype=dtype, served_name=served_name, torch_threads=torch_threads, group=group,
                             header_timeout_s=header_timeout_s, body_timeout_s=body_timeout_s,
                             keep_alive_s=keep_alive_s, max_connections=max_connections, insecure=insecure)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        check_exposure(config)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--host") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if ray:
        from toolrm_rl.serve.ray_serve import run_ray_serve

        run_ray_serve(config, replicas=replicas, num_gpus_per_replica=num_gpus_per_replica,
                      num_cpus_per_replica=num_cpus_per_replica, address=ray_address)
    else:
        run_server(config)


# ------------------------------------------------- bench build, eval best-of-n / noise, filter (eval-tools)
bench_app = typer.Typer(help="Build benchmarks: FC-RewardBench-format pairs from BFCL logs.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
@bench_app.command("build")
def bench_build(
    bfcl_logs: Path = typer.Option(..., "--bfcl-logs", exists=True, file_okay=False,
                                   help="Folder of BFCL logs (score/<model>/... and/or result/<model>/...; 2024 "
                                        "v1/v2 or v3/v4 layout)."),
    out: Path = typer.Option(..., "--out", help="Pairs file to write (.jsonl, .json or .parquet; FC-RewardBench schema)."),
    bfcl_data: Optional[Path] = typer.Option(None, "--bfcl-data", help="bfcl-eval data/ folder for questions missing "
                                             "from the logs (default: the installed wheel's)."),
    models: Optional[list[str]] = typer.Option(None, "--models", help="Keep only these models (repeatable or a,b)."),
    categories: Optional[list[str]] = typer.Option(None, "--categories", help="Keep only these test categories (2024, v3 or v4 names, "
                                              "e.g. parallel_function or parallel; java or simple_java)."),
    per_question: int = typer.Option(1, "--per-question", help="Pairs per question, from different failing models."),
    seed: int = typer.Option(0, help="Seed of the choice among failing models."),
    keep_unparsable: bool = typer.Option(False, "--keep-unparsable", help="Keep outputs BFCL could not decode "
                                         "(no rejected calls; the raw text in rejected_text)."),
    optional_params: str = typer.Option("omit", "--optional-params", help="omit: leave out parameters whose acceptable "
                                        "values include \"\"; first: write their first non-empty value."),
    as_json: bool = typer.Option(False, "--json", help="End standard output with one JSON line of the build report."),
) -> None:
    """Turn BFCL result/score logs into FC-RewardBench-format pairs: chosen from the possible answer,
    rejected from a logged failed output; one pair per question by default. Every pair is checked with
    our matcher (chosen passes, rejected fails); rows that cannot be are dropped and counted by reason."""
    from toolrm_rl.data.records import save_pairs
    from toolrm_rl.eval.bench_builder import build_pairs

    try:
        pairs, report = build_pairs(bfcl_logs, data_dir=bfcl_data, models=_split_list(models) or None,
                                    categories=_split_list(categories) or None, per_question=per_question, seed=seed,
                                    keep_unparsable=keep_unparsable, optional_params=optional_params)
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from None
    save_pairs(pairs, out, schema="fc_rewardbench")
    for reason, examples in sorted(report.examples.items()):
        for example in examples:
            typer.echo(f"dropped ({reason}): {example}")
    typer.echo(f"{report}\nwrote {len(pairs)} pairs to {out}")
    if as_json:
        typer.echo(json.dumps(report.to_dict()))


@eval_app.command("best-of-n", context_settings=_RECIPE_CTX)
def eval_best_of_n(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False,
                                          help="Recipe YAML (recipes/eval/best_of_n.yaml); flags override it."),
    data: Optional[str] = typer.Option(None, "--data", help="'bfcl' or a file of examples with possible answers."),
    candidates: Optional[str] = typer.Option(None, "--candidates", help="Pre-generated candidates JSONL (no sampling)."),
    policy: Optional[str] = typer.Option(None, "--policy", help="Generator backend: vllm, transformers, openai."),
    n: Optional[int] = typer.Option(None, "-n", "--n", help="Maximum N (candidates per question)."),
    scorer: Optional[str] = typer.Option(None, "--scorer", help="Scorer that picks the reward-selected candidate."),
    model: Optional[str] = typer.Option(None, "--model", help="Checkpoint for rm/hybrid."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Seeded sample of this many questions."),
    per_category: Optional[int] = typer.Option(None, "--per-category", help="Seeded sample of this many questions "
                                               "per category (instead of --limit)."),
    full: bool = typer.Option(False, "--full", help="Every question of the categories (limit and per_category off)."),
    out: Optional[str] = typer.Option(None, "--out", help="Output directory."),
    as_json: bool = typer.Option(False, "--json", help="End standard output with one JSON line of the accuracies."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
) -> None:
    """Best-of-N accuracy by BFCL matching for greedy, reward-selected, oracle pass@N, majority vote, first
    schema-valid and random choice, over N = 1, 2, 4, ...; extra arguments are key=value overrides
    (policy_options.model=PATH, temperature=0.6, limit=100)."""
    import logging

    from toolrm_rl.eval.best_of_n import BestOfNConfig, markdown, run_best_of_n

    cfg = _recipe_config(BestOfNConfig, ctx, config, {"data": data, "candidates": candidates, "policy": policy, "n": n,
                                                       "scorer": scorer, "model": model, "limit": limit, "out": out,
                                                       "per_category": per_category})
    if full:
        cfg.limit = cfg.per_category = None
    if print_config:
        _print_config(cfg)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        result = run_best_of_n(cfg, progress=typer.echo)
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(markdown(result))
    typer.echo(f"report: {Path(cfg.out) / 'report.json'}, plot: {Path(cfg.out) / 'best_of_n.png'}")
    if as_json:
        typer.echo(json.dumps({"scorer": result.scorer, "n_questions": result.n_questions, "ns": result.ns,
                               "accuracy": result.accuracy, "intervals": result.intervals}))


@eval_app.command("noise", context_settings=_RECIPE_CTX)
def eval_noise(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False,
                                          help="Recipe YAML (recipes/eval/noise.yaml); flags override it."),
    data: Optional[str] = typer.Option(None, "--data", help="FC-RewardBench-format pairs."),
    scorer: Optional[list[str]] = typer.Option(None, "--scorer", help="rules, rm, hybrid, ... (repeatable)."),
    model: Optional[str] = typer.Option(None, "--model", help="Checkpoint for rm/hybrid."),
    levels: Optional[str] = typer.Option(None, "--levels", help="Comma-separated noise levels, e.g. 0,0.1,0.2,0.4."),
    perturbations: Optional[list[str]] = typer.Option(None, "--perturbations", help="Subset of typos, descriptions, "
                                                      "rename_params, shuffle_tools, distractors (repeatable or a,b)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Seeded sample of this many pairs."),
    out: Optional[str] = typer.Option(None, "--out", help="Output directory."),
    as_json: bool = typer.Option(False, "--json", help="End standard output with one JSON line of the results."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
) -> None:
    """Pairwise accuracy under input noise (query typos, noisy descriptions, renamed parameters, shuffled and
    distractor tools) at graded levels, one curve per perturbation; extra arguments are key=value overrides."""
    from toolrm_rl.eval.noise import NoiseConfig, markdown, run_noise

    try:
        level_list = [float(x) for x in levels.split(",")] if levels else None
    except ValueError:
        raise typer.BadParameter(f"--levels: expected comma-separated numbers, got {levels!r}") from None
    cfg = _recipe_config(NoiseConfig, ctx, config, {
        "data": data, "scorers": list(scorer) if scorer else None, "model": model, "levels": level_list,
        "perturbations": _split_list(perturbations) or None, "limit": limit, "out": out})
    if print_config:
        _print_config(cfg)
    try:
        results = run_noise(cfg, progress=lambda msg: typer.echo(msg, err=True))
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(markdown(results))
    typer.echo(f"report: {Path(cfg.out) / 'report.json'}")
    if as_json:
        typer.echo(json.dumps({r.scorer: r.to_dict() for r in results}))


@eval_app.command("biases", context_settings=_RECIPE_CTX)
def eval_biases(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False,
                                          help="Recipe YAML (recipes/eval/biases.yaml); flags override it."),
    model: Optional[str] = typer.Option(None, "--model", help="ToolRM checkpoint for rm/hybrid."),
    scorer: Optional[str] = typer.Option(None, "--scorer", help="rm (default), rules, hybrid, ..."),
    sources: Optional[list[str]] = typer.Option(None, "--sources", help="Offline sources whose bias hold-out slice "
                                                "makes the pairs (repeatable or a,b; default: all non-BFCL-single-turn)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many pairs per bias (seeded sample)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the mutations, composition and sample."),
    out: Optional[str] = typer.Option(None, "--out", help="Output directory (report.json, report.md, pairs.jsonl)."),
    as_json: bool = typer.Option(False, "--json", help="End standard output with one JSON line: {\"biases\": {name: "
                                 "{accuracy, n, ties}}, ...}."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
) -> None:
    """Bias suite: accuracy (ties are losses) on minimal pairs from held-out non-BFCL source examples: gold vs
    one call dropped (fewer_calls), one call repeated or added (more_calls, more_calls_extra,
    more_calls_function: a call to another function), no call
    (no_call), an abstention vs a call when no tool fits (abstain, abstain_removed_tool), a near-miss value
    (near_miss). Extra arguments are key=value overrides (compose_parallel=false)."""
    from toolrm_rl.data.sources import SourceError
    from toolrm_rl.eval.biases import BiasConfig, markdown, run_biases
    from toolrm_rl.scoring import ScorerUnavailable

    cfg = _recipe_config(BiasConfig, ctx, config, {"model": model, "scorer": scorer, "sources": _split_list(sources) or None,
                                                    "limit": limit, "seed": seed, "out": out})
    if print_config:
        _print_config(cfg)
    try:
        report = run_biases(cfg, progress=lambda msg: typer.echo(msg, err=True))
    except (ValueError, FileNotFoundError, SourceError) as err:
        raise typer.BadParameter(str(err)) from None
    except ScorerUnavailable as err:
        typer.echo(f"scorer unavailable: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(markdown(report))
    typer.echo(f"report: {Path(cfg.out) / 'report.json'}; pairs: {Path(cfg.out) / 'pairs.jsonl'}")
    if as_json:
        typer.echo(json.dumps(report))


@app.command("filter", context_settings=_RECIPE_CTX)
def filter_cmd(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False,
                                          help="Recipe YAML (recipes/eval/filter.yaml); flags override it."),
    data: Optional[str] = typer.Option(None, "--data", help="SFT dataset: OpenAI chat rows or xlam rows (JSONL or JSON)."),
    scorer: Optional[str] = typer.Option(None, "--scorer", help="rules, rm, hybrid, ..."),
    model: Optional[str] = typer.Option(None, "--model", help="Checkpoint for rm/hybrid."),
    keep_top: Optional[float] = typer.Option(None, "--keep-top", help="Keep this top fraction by score (e.g. 0.5)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Keep rows with score >= this."),
    out: Optional[str] = typer.Option(None, "--out", help="Filtered dataset path (same format as the input)."),
    report_dir: Optional[str] = typer.Option(None, "--report-dir", help="scores.jsonl / score_hist.png folder "
                                             "(default: <out>_filter/)."),
    as_json: bool = typer.Option(False, "--json", help="End standard output with one JSON line of the summary."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
) -> None:
    """Reward-guided data filtering: score each row's own assistant tool calls, keep the top fraction or those
    above a threshold; writes the filtered dataset, scores.jsonl and a score histogram."""
    from toolrm_rl.eval.filtering import FilterConfig, filter_dataset
    from toolrm_rl.scoring import build_scorers

    cfg = _recipe_config(FilterConfig, ctx, config, {"data": data, "scorer": scorer, "model": model, "keep_top": keep_top,
                                                      "threshold": threshold, "out": out, "report_dir": report_dir})
    if threshold is not None and keep_top is None:  # a flag picks the rule over the recipe's other one
        cfg.keep_top = None
    elif keep_top is not None and threshold is None:
        cfg.threshold = None
    if print_config:
        _print_config(cfg)
    if not cfg.data or not cfg.out:
        raise typer.BadParameter("--data and --out are required")
    if (cfg.keep_top is None) == (cfg.threshold is None):
        raise typer.BadParameter("give exactly one of --keep-top and --threshold")
    try:
        scorer = build_scorers([cfg.scorer], cfg.model, cfg.scorer_options)[cfg.scorer]
        result = filter_dataset(cfg.data, cfg.out, scorer, keep_top=cfg.keep_top, threshold=cfg.threshold,
                                report_dir=cfg.report_dir, chunk_size=cfg.chunk_size)
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from None
    cut = "none" if result.cut is None else f"{result.cut:.4g}"
    typer.echo(f"kept {result.kept} of {result.n} rows (cut score {cut}) -> {result.out}\n"
               f"scores and histogram: {result.report_dir}")
    if as_json:
        typer.echo(json.dumps(result.to_dict()))


# ------------------------------------------------------------------------------------- verl-data
@app.command("verl-data")
def verl_data_cmd(
    source: str = typer.Option(..., "--source", help="Offline source name (bfcl_exec, nestful, ...) or a file: "
                                                     "xlam/OpenAI-JSONL/SGD rows, BFCL-format questions, canonical JSONL."),
    out: Path = typer.Option(..., "--out", help="Output directory for train.parquet and val.parquet."),
    kind: str = typer.Option("auto", "--kind", help="File input kind: auto, bfcl, canonical, xlam, openai_jsonl, sgd, ..."),
    tools_in: str = typer.Option("system", "--tools-in", help="system: tools listed in the system prompt; template: "
                                                              "left to verl's tool config (tool_agent)."),
    fmt: str = typer.Option("hermes", "--format", help="Call format the prompt asks for: hermes, json, pythonic."),
    style: str = typer.Option("model", "--style", help="reward_model.style: model (ToolRM reward) or rule."),
    agent_name: Optional[str] = typer.Option(None, "--agent-name", help="agent_name column, e.g. tool_agent."),
    max_rows: Optional[int] = typer.Option(None, "--max-rows", help="Keep at most this many examples."),
    val_fraction: float = typer.Option(0.05, "--val-fraction", help="Share of examples in val.parquet."),
    seed: int = typer.Option(0, "--seed", help="Shuffle seed for the split."),
) -> None:
    """Convert tool-calling examples into verl parquet rows (prompt, reward_model, extra_info with tools,
    conversation and gold calls as JSON strings) for toolrm_rl.verl.reward."""
    from toolrm_rl.data.sources import SourceError
    from toolrm_rl.verl.data import load_examples, write_verl_data

    skipped: dict[str, int] = {}
    try:
        examples = load_examples(source, kind, skipped=skipped)
        report = write_verl_data(examples, out, val_fraction=val_fraction, seed=seed, tools_in=tools_in, fmt=fmt,
                                 style=style, agent_name=agent_name, max_rows=max_rows)
    except (SourceError, ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(f"train: {report.n_train} rows -> {report.train_path}\nval: {report.n_val} rows -> {report.val_path}\n"
               f"gold 'no call': {report.n_no_call}; sources: {json.dumps(report.sources)}")
    for reason, n in skipped.items():
        typer.echo(f"skipped {n} turns: {reason}")


# -- synth: preference-pair synthesis (toolrm_rl.data.synth) ------------------------------------------

@app.command("synth", context_settings=_RECIPE_CTX)
def synth_cmd(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., exists=True, dir_okay=False, help="Recipe YAML (see recipes/synth/)."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    force: bool = typer.Option(False, "--force", help="Discard shards of a different config in output_dir and start over."),
) -> None:
    """Synthesize (correct, incorrect) tool-call pairs from a recipe. Extra arguments are key=value overrides."""
    from rich.console import Console
    from rich.markdown import Markdown

    from toolrm_rl.data.synth import SynthConfig, summary_markdown, synthesize

    cfg = _recipe_config(SynthConfig, ctx, recipe, {})
    if print_config:
        _print_config(cfg)
    try:
        result = synthesize(cfg, force=force)
    except ValueError as err:  # a config/output-dir conflict or bad source entry, named in the message
        raise typer.BadParameter(str(err)) from None
    Console().print(Markdown(summary_markdown(result.summary)))
    typer.echo(f"pairs: {result.pairs_file or result.output_dir} ({result.summary.get('n_pairs', 0)} rows, "
               f"{result.seconds:.1f} s); summary: {result.output_dir / 'summary.md'}")



# -- quickstart (the README's first command) ---------------------------------------------------------

@app.command("quickstart")
def quickstart_cmd(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Output directory (model/, report.md, plots)."),
    minutes: float = typer.Option(12.0, "--minutes", help="Training time budget in minutes."),
    bench: list[Path] = typer.Option([], "--bench", exists=True, help="Extra FC-RewardBench-format file to evaluate on (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Redo every stage, replacing earlier outputs in --out."),
    synth_examples: Optional[int] = typer.Option(None, help="Use only N source examples for synthesis (quick runs)."),
    eval_pairs: int = typer.Option(1500, help="Pairs in the built-in BFCL mutation evaluation set."),
    max_steps: int = typer.Option(-1, help="Stop training after N steps (-1: the time budget decides)."),
    recipes: Optional[Path] = typer.Option(None, "--recipes", help="Recipes folder (default: the repository's recipes/)."),
    wandb: bool = typer.Option(True, "--wandb/--no-wandb", help="Log to wandb (offline without credentials)."),
) -> None:
    """Synthesize pairs, train the embedded MiniLM ToolRM, evaluate it against rules and hybrid, and score a
    GRPO group with the verl reward: the whole product on a CPU, offline. Reruns reuse finished stages."""
    import logging

    from toolrm_rl.quickstart import QuickstartConfig, QuickstartError, run_quickstart

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    cfg = QuickstartConfig(out=str(out), minutes=minutes, bench=[str(b) for b in bench], force=force,
                           synth_examples=synth_examples, eval_pairs=eval_pairs, max_steps=max_steps,
                           recipes_dir=str(recipes) if recipes else None, wandb=wandb)
    try:
        run_quickstart(cfg, echo=typer.echo)
    except QuickstartError as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(f"\nmodel:   {out / 'model'}  (toolrm eval/serve/verl accept it)\n"
               f"report:  {out / 'report.md'}  and  {out / 'report.json'}\n"
               f"plots:   {out / 'eval'}/*/by_category.png, {out / 'synth' / 'summary.png'}, {out / 'training_loss.png'}\n"
               f"reward:  {out / 'reward_group.md'}")


if __name__ == "__main__":
    app()
